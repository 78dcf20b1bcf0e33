using Federated.Training.Tokenization;

namespace Federated.Training.Data;

/// <summary>One chat turn of a <c>{"messages": [...]}</c> record.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>The chat layout used for <c>messages</c> records: Zephyr's plain-text template, loss on assistant turns.</summary>
/// <remarks>
/// A conversation becomes <c>BOS "&lt;|role|&gt;\n" content EOS "\n"</c> for each turn, in order (the format of
/// HuggingFaceH4/zephyr-7b-beta, written as ordinary text so it works with any tokenizer). The model learns the
/// assistant contents and the EOS that ends each of them; headers, system and user turns carry no loss. The Jinja
/// <c>chat_template</c> of tokenizer_config.json is not run: evaluating Jinja is out of scope, and a fixed,
/// documented layout keeps every edge client's sequences identical.
/// </remarks>
public static class ChatTemplate
{
    public const string System = "system";
    public const string User = "user";
    public const string Assistant = "assistant";

    /// <summary>The roles a message may have.</summary>
    public static IReadOnlyList<string> Roles { get; } = [System, User, Assistant];

    /// <summary>The text header that opens a turn of <paramref name="role"/>.</summary>
    public static string Header(string role) => $"<|{role}|>\n";

    internal static void Append(TokenSequence sequence, IReadOnlyList<ChatMessage> messages, ITextTokenizer tokenizer, bool addBos)
    {
        if (addBos && tokenizer.BosId is int bos)
        {
            sequence.Add(bos, isTarget: false);
        }
        foreach (ChatMessage message in messages)
        {
            bool learn = message.Role == Assistant;
            sequence.AddText(tokenizer, Header(message.Role), isTarget: false);
            sequence.AddText(tokenizer, message.Content, learn);
            sequence.Add(tokenizer.EosId, learn);
            sequence.AddText(tokenizer, "\n", isTarget: false);
        }
    }
}

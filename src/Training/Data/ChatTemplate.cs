using System.Text.Json;
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
/// documented layout keeps every edge client's sequences identical. Generation uses the same layout and ends the
/// prompt with the assistant header, so an adapter trained on messages records answers in the form it learned.
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

    /// <summary>
    /// Token ids that ask the model for the assistant's next turn: the conversation laid out as for training, then
    /// <c>"&lt;|assistant|&gt;\n"</c>; the reply ends with EOS.
    /// </summary>
    public static int[] GenerationPrompt(IReadOnlyList<ChatMessage> messages, ITextTokenizer tokenizer, bool addBos = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (messages.Count == 0)
        {
            throw new ArgumentException("a chat prompt needs at least one message", nameof(messages));
        }
        foreach (ChatMessage message in messages)
        {
            if (!Roles.Contains(message.Role))
            {
                throw new ArgumentException($"message role '{message.Role}' is not one of {string.Join(", ", Roles)}", nameof(messages));
            }
        }
        var sequence = new TokenSequence();
        Append(sequence, messages, tokenizer, addBos);
        sequence.AddText(tokenizer, Header(Assistant), isTarget: false);
        return [.. sequence.Ids];
    }

    /// <summary>Reads a JSON array of <c>{"role", "content"}</c> objects; a bad entry is a <see cref="FormatException"/> naming its index.</summary>
    public static List<ChatMessage> ReadMessages(JsonElement messages)
    {
        if (messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
        {
            throw new FormatException("\"messages\" must be a non-empty array");
        }
        var result = new List<ChatMessage>();
        foreach (JsonElement message in messages.EnumerateArray())
        {
            int index = result.Count;
            if (message.ValueKind != JsonValueKind.Object
                || !message.TryGetProperty("role", out JsonElement role) || role.ValueKind != JsonValueKind.String
                || !message.TryGetProperty("content", out JsonElement content) || content.ValueKind != JsonValueKind.String)
            {
                throw new FormatException($"messages[{index}] must be an object with string \"role\" and \"content\"");
            }
            string roleName = role.GetString()!;
            if (!Roles.Contains(roleName))
            {
                throw new FormatException($"messages[{index}].role '{roleName}' is not one of {string.Join(", ", Roles)}");
            }
            result.Add(new ChatMessage(roleName, content.GetString()!));
        }
        return result;
    }

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

namespace Federated.Training.Tokenization;

/// <summary>A tokenizer folder or file that cannot be used: missing, not JSON, or rejected by the tokenizers runtime.</summary>
public sealed class TokenizerLoadException(string message, Exception? inner = null) : Exception(message, inner);

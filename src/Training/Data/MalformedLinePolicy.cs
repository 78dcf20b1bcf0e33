namespace Federated.Training.Data;

/// <summary>What a dataset reader does with a line it cannot use.</summary>
public enum MalformedLinePolicy
{
    /// <summary>Stop at the first malformed line with a <see cref="DatasetFormatException"/> naming file and line.</summary>
    Stop,

    /// <summary>Skip the line and record it in <see cref="JsonlDataset.SkippedLines"/>.</summary>
    Skip,
}

/// <summary>One line a reader skipped: where it is (the 1-based column when the JSON parser names one) and why it was unusable.</summary>
public sealed record MalformedLine(string FilePath, int LineNumber, string Reason, int? Column = null)
{
    public override string ToString() => Column is { } column ? $"{FilePath}:{LineNumber}:{column}: {Reason}" : $"{FilePath}:{LineNumber}: {Reason}";
}

/// <summary>A dataset line that is not a usable example; the message starts with <c>file:line:</c>.</summary>
public sealed class DatasetFormatException(MalformedLine line)
    : Exception(line.ToString())
{
    public MalformedLine Line { get; } = line;
}

namespace Federated.Coordinator.State;

/// <summary>Where a selected client stands in one round; a decline is final.</summary>
internal enum ParticipantStatus
{
    /// <summary>Chosen for the round; nothing from it yet.</summary>
    Selected,

    /// <summary>Refused the round under its local policy (or the run's terms); it sends nothing.</summary>
    Declined,

    /// <summary>Its whole masked input is in the released sum.</summary>
    Uploaded,

    /// <summary>Missed a stage; its input, if any, is not in the sum.</summary>
    Dropped,
}

/// <summary>The stored form of <see cref="ParticipantStatus"/> (the participants table keeps lowercase words).</summary>
internal static class ParticipantStatusText
{
    public static string ToStored(this ParticipantStatus status) => status switch
    {
        ParticipantStatus.Selected => "selected",
        ParticipantStatus.Declined => "declined",
        ParticipantStatus.Uploaded => "uploaded",
        ParticipantStatus.Dropped => "dropped",
        _ => throw new ArgumentOutOfRangeException(nameof(status), status, "not a participant status"),
    };

    public static ParticipantStatus Parse(string stored) => stored switch
    {
        "selected" => ParticipantStatus.Selected,
        "declined" => ParticipantStatus.Declined,
        "uploaded" => ParticipantStatus.Uploaded,
        "dropped" => ParticipantStatus.Dropped,
        _ => throw new InvalidDataException($"participant status '{stored}' is not one of selected, declined, uploaded, dropped"),
    };
}

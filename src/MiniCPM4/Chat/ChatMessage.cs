namespace MiniCPM4.Chat;

/// <summary>One chat turn: a role ("system", "user", "assistant", …) and its text.</summary>
public sealed record ChatMessage(string Role, string Content);

namespace MiniCPM4.Server;

/// <summary>A request the server refuses, answered with an OpenAI-style error body.</summary>
internal sealed class ApiException(int statusCode, string message, string type = "invalid_request_error",
    string? param = null, string? code = null) : Exception(message)
{
    public int StatusCode { get; } = statusCode;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    /// <summary>Seconds for a Retry-After header, when set.</summary>
    public int? RetryAfterSeconds { get; init; }

    public static ApiException BadRequest(string message, string? param = null, string? code = null) =>
        new(400, message, "invalid_request_error", param, code);
}

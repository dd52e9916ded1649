namespace MiniCPM4.Chat.Jinja;

/// <summary>A chat template could not be parsed or rendered.</summary>
public class TemplateException : Exception
{
    public TemplateException(string message, int line, int column, Exception? inner = null)
        : base(message, inner)
    {
        Line = line;
        Column = column;
    }

    /// <summary>1-based line in the template source (0 when unknown).</summary>
    public int Line { get; }

    /// <summary>1-based column in the template source (0 when unknown).</summary>
    public int Column { get; }
}

/// <summary>
/// The template is not valid Jinja, or uses a construct this renderer does not support. Thrown when the template is
/// parsed, before anything is rendered; the message names the line and column.
/// </summary>
public sealed class TemplateSyntaxException(string message, int line, int column)
    : TemplateException($"{message} (line {line}, column {column})", line, column)
{
    /// <summary>The problem without the position.</summary>
    public string Reason { get; } = message;
}

/// <summary>Rendering failed: a type error, an undefined value used where Jinja2 fails, an unknown filter at run
/// time…</summary>
public class TemplateRenderException : TemplateException
{
    public TemplateRenderException(string message, int line, int column, Exception? inner = null)
        : base(line > 0 ? $"{message} (line {line}, column {column})" : message, line, column, inner)
    {
        Reason = message;
    }

    /// <summary>The problem without the position.</summary>
    public string Reason { get; }
}

/// <summary>
/// The template called <c>raise_exception(message)</c> (as Hugging Face templates do for conversations they do not
/// accept, e.g. roles that do not alternate). <see cref="Exception.Message"/> is the template's message, unchanged.
/// </summary>
public sealed class TemplateRaisedException : TemplateException
{
    public TemplateRaisedException(string message, int line, int column) : base(message, line, column) { }
}

/// <summary>A render ran past its step limit, its output size limit or its call depth limit.</summary>
public sealed class TemplateLimitException(string message, int line, int column)
    : TemplateRenderException(message, line, column);

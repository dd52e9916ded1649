using System.Text.Json;
using Microsoft.Extensions.AI;
using MiniCPM4.Constraints;
using NUnit.Framework;

namespace MiniCPM4.AI.Tests;

/// <summary>Structured output through IChatClient on the demo model: ChatResponseFormat and required tool
/// calls.</summary>
[TestFixture]
public class StructuredOutputTests
{
    public enum Sky { Sunny, Cloudy, Rainy }

    public sealed record Forecast(Sky Sky,
        [property: System.ComponentModel.DataAnnotations.Range(-30, 45)] int TemperatureC, bool Windy);

    private MiniCpmModel _model = null!;
    private MiniCpmChatClient _client = null!;

    [OneTimeSetUp]
    public void Load()
    {
        string dir = MiniCPM4.Tests.Demo.DemoModelDirectory.Find();
        _model = MiniCpmModel.Load(dir, new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu,
            Threads = 2,
            DraftDirectory = Path.Combine(dir, "draft"),
            FrSpecPath = Directory.GetFiles(Path.Combine(dir, "draft"), "freq_*.pt").Single(),
        });
        _client = new MiniCpmChatClient(_model);
    }

    [OneTimeTearDown]
    public void Unload()
    {
        _client.Dispose();
        _model.Dispose();
    }

    [Test]
    public async Task GetResponseAsyncOfTReturnsAValidObject([Values(0f, 0.9f)] float temperature)
    {
        var options = new ChatOptions { Temperature = temperature, Seed = 11, MaxOutputTokens = 200 };
        var response = await _client.GetResponseAsync<Forecast>("What is the weather in Paris tomorrow?", options);
        Assert.That(response.TryGetResult(out var forecast), Is.True, response.Text);
        Assert.That(Enum.IsDefined(forecast!.Sky), Is.True);
        Assert.That(forecast.TemperatureC, Is.InRange(-30, 45));
    }

    [Test]
    public async Task JsonResponseFormatGivesAJsonObject()
    {
        var options = new ChatOptions
        {
            ResponseFormat = ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(
                """{"type":"object","properties":{"answer":{"enum":["yes","no"]},"confidence":{"type":"integer","minimum":0,"maximum":100}},"required":["answer","confidence"],"additionalProperties":false}""").RootElement),
            Temperature = 0.8f,
            Seed = 4,
            MaxOutputTokens = 100,
        };
        var response = await _client.GetResponseAsync("Is the sky blue?", options);
        using var doc = JsonDocument.Parse(response.Text);
        Assert.That(doc.RootElement.GetProperty("answer").GetString(), Is.AnyOf("yes", "no"));
        Assert.That(doc.RootElement.GetProperty("confidence").GetInt32(), Is.InRange(0, 100));
    }

    [Test]
    public async Task ARequiredToolIsCalledWithArgumentsValidForItsSchema()
    {
        var weather = AIFunctionFactory.Create(
            ([System.ComponentModel.DataAnnotations.Range(1, 7)] int days, Sky sky) => $"{sky} for {days} days",
                "get_forecast", "Forecast for some days");
        var options = new ChatOptions
        {
            Tools = [weather],
            ToolMode = ChatToolMode.RequireSpecific("get_forecast"),
            Temperature = 0.9f,
            Seed = 2,
            MaxOutputTokens = 100,
        };
        var response = await _client.GetResponseAsync("Plan my week", options);
        var call = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Single();
        Assert.That(call.Name, Is.EqualTo("get_forecast"));
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.ToolCalls));
        Assert.That(Convert.ToInt32(call.Arguments!["days"]), Is.InRange(1, 7));
        Assert.That(call.Arguments["sky"]?.ToString(), Is.AnyOf("Sunny", "Cloudy", "Rainy", "0", "1", "2"));
    }

    [Test]
    public void AToolModeNamingAMissingFunctionFails()
    {
        var options =
            new ChatOptions { Tools = [AIFunctionFactory.Create(() => 1, "one")],
            ToolMode = ChatToolMode.RequireSpecific("two") };
        Assert.ThrowsAsync<ArgumentException>(() => _client.GetResponseAsync("hi", options));
    }
}

using NUnit.Framework;

namespace MiniCPM4.Tests;

/// <summary>The session pool shared by the chat client and the server.</summary>
[TestFixture]
public sealed class SessionPoolTests
{
    private MiniCpmModel _model = null!;

    [OneTimeSetUp]
    public void Load() => _model = TinyModelFixture.Load();

    [OneTimeTearDown]
    public void Free() => _model.Dispose();

    [Test]
    public async Task AConversationGetsItsSessionBack_WithItsKvCacheAndState()
    {
        using var pool = new MiniCpmSessionPool(_model, new SessionPoolOptions { MaxConcurrentSessions = 2 });
        int[] prompt = [1, 20, 30, 40, 50];
        MiniCpmSession first;
        using (var lease = await pool.RentAsync("c1"))
        {
            Assert.That(lease.IsCachedConversation, Is.False);
            first = lease.Session;
            first.SetPrompt(prompt);
            lease.Keep("c1", "history-1");
        }
        Assert.That(pool.CachedConversationCount, Is.EqualTo(1));
        using (var other = await pool.RentAsync("c2"))
            Assert.That(other.Session, Is.Not.SameAs(first), "another conversation never gets c1's session");
        using (var again = await pool.RentAsync("c1"))
        {
            Assert.That(again.Session, Is.SameAs(first));
            Assert.That(again.State, Is.EqualTo("history-1"));
            Assert.That(again.Session.SetPrompt([.. prompt, 60]), Is.EqualTo(1), "only the new token is evaluated");
        }
        // Not kept again: a lease from the cache goes back unchanged unless told otherwise.
        Assert.That(pool.CachedConversationCount, Is.EqualTo(1));
    }

    [Test]
    public async Task TheLeastRecentlyUsedConversationIsEvicted()
    {
        var evicted = new List<string>();
        using var pool = new MiniCpmSessionPool(_model,
            new SessionPoolOptions { MaxCachedConversations = 2, ConversationEvicted = evicted.Add });
        foreach (var id in new[] { "a", "b", "c" })
        {
            using var lease = await pool.RentAsync(id);
            lease.Keep(id, id);
        }
        Assert.That(evicted, Is.EqualTo(new[] { "a" }));
        Assert.That(pool.CachedConversationCount, Is.EqualTo(2));
        using var back = await pool.RentAsync("a");
        Assert.That(back.IsCachedConversation, Is.False);
    }

    [Test]
    public async Task RentersBeyondTheSlotsWaitInOrder_AndBeyondMaxWaitingAreRefused()
    {
        using var pool = new MiniCpmSessionPool(_model,
            new SessionPoolOptions { MaxConcurrentSessions = 1, MaxWaiting = 1 });
        var holder = await pool.RentAsync();
        var waiting = pool.RentAsync();
        Assert.That(waiting.IsCompleted, Is.False);
        Assert.That(pool.Waiting, Is.EqualTo(1));
        await Assert.ThatAsync(() => pool.RentAsync(), Throws.TypeOf<SessionPoolFullException>());
        holder.Dispose();
        using (await waiting.WaitAsync(TimeSpan.FromSeconds(10)))
            Assert.That(pool.InUse, Is.EqualTo(1));
        Assert.That(pool.InUse, Is.Zero);
    }

    [Test]
    public async Task ACancelledWaitLeavesNoTrace_AndADiscardedSessionIsNotReused()
    {
        using var pool = new MiniCpmSessionPool(_model, new SessionPoolOptions { MaxConcurrentSessions = 1 });
        MiniCpmSession discarded;
        using (var lease = await pool.RentAsync())
        {
            using var cts = new CancellationTokenSource();
            var wait = pool.RentAsync(cancellationToken: cts.Token);
            await cts.CancelAsync();
            await Assert.ThatAsync(() => wait, Throws.InstanceOf<OperationCanceledException>());
            Assert.That(pool.Waiting, Is.Zero);
            discarded = lease.Session;
            lease.Discard();
        }
        using var next = await pool.RentAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(next.Session, Is.Not.SameAs(discarded));
    }

    [Test]
    public void InvalidOptionsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            _ = new MiniCpmSessionPool(_model, new SessionPoolOptions { MaxConcurrentSessions = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            _ = new MiniCpmSessionPool(_model, new SessionPoolOptions { MaxWaiting = -1 }));
    }
}

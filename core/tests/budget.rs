//! The request budget every conversation of an account shares (issue: hundreds of
//! conversations within the real server's rate limits). One named test per behaviour.
#![cfg(feature = "testkit")]

use gapless::testkit::Harness;
use gapless::*;
use std::time::Duration;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn fetch_times(h: &Harness) -> usize {
    h.commands()
        .iter()
        .filter(|c| matches!(c, Command::Fetch(_)))
        .count()
}

fn opens(h: &Harness) -> usize {
    h.commands()
        .iter()
        .filter(|c| matches!(c, Command::OpenStream { .. }))
        .count()
}

/// `n` catch-up-only conversations `c0..`, each with its first catch-up answered.
fn caught_up(config: Config, n: usize) -> Harness {
    let mut h = Harness::new(config);
    for i in 0..n {
        h.subscribe(Subscription::catch_up_only(format!("c{i}")));
    }
    for _ in 0..10_000 {
        match h.take_fetch() {
            Some(f) => h.answer(&f, vec![]),
            None => {
                if h.machine()
                    .poll_timeout()
                    .is_some_and(|t| t <= h.now() + MS(60_000))
                    && h.machine().inflight_fetches() == 0
                    && fetch_times(&h) < n
                {
                    h.advance(MS(100));
                } else {
                    break;
                }
            }
        }
    }
    h
}

/// The default machine with a budget of one fetch a second, whatever the minute's bucket
/// holds (`max_queue_wait` stays 30 s).
fn one_fetch_a_second() -> Config {
    Config {
        budget: Budget {
            fetches: Some(Rate { per_minute: 60 }),
            burst: 1,
            burst_per_second: 1,
            ..Budget::default()
        },
        ..Config::default()
    }
}

/// The default machine with a minute's budget of 60 fetches (and the default burst limiter):
/// 300 conversations spend it for minutes.
fn sixty_fetches_a_minute() -> Config {
    Config {
        budget: Budget {
            fetches: Some(Rate { per_minute: 60 }),
            ..Budget::default()
        },
        ..Config::default()
    }
}

#[test]
fn a_429_pauses_every_conversations_fetches_until_the_servers_time_is_up() {
    let mut h = caught_up(Config::default(), 3);
    // Every conversation wants a catch-up at once (the app came back to the foreground).
    h.input("resume", Input::Resume { convo: None });
    let first = h.take_fetch().unwrap();
    h.fail(
        &first,
        Failure::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
        },
    );
    // The other two were already asked for; answer them. Nothing new goes out for 5 s.
    while let Some(f) = h.take_fetch() {
        h.answer(&f, vec![]);
    }
    let before = fetch_times(&h);
    h.advance(MS(4_999));
    assert_eq!(fetch_times(&h), before, "paused for every conversation");
    h.advance(MS(1_000));
    assert_eq!(
        fetch_times(&h),
        before + 1,
        "then resumed gently: the refused one, once a token refilled"
    );
    h.assert_invariants();
}

#[test]
fn a_429_without_retry_after_pauses_for_the_default() {
    let mut h = caught_up(Config::default(), 2);
    h.input("resume", Input::Resume { convo: None });
    let f = h.take_fetch().unwrap();
    h.fail(&f, Failure::RateLimited { retry_after: None });
    while let Some(f) = h.take_fetch() {
        h.answer(&f, vec![]);
    }
    let before = fetch_times(&h);
    h.advance(Config::default().budget.pause_without_retry_after - MS(1));
    assert_eq!(fetch_times(&h), before);
}

#[test]
fn fetches_stay_within_the_budget_and_a_gap_in_view_goes_before_routine_catch_ups() {
    let config = one_fetch_a_second();
    let mut h = caught_up(config, 30);
    let start = fetch_times(&h);
    // Thirty routine catch-ups queue up; then the conversation on screen is resumed.
    h.input("resume all", Input::Resume { convo: None });
    h.input(
        "resume c29",
        Input::Resume {
            convo: Some("c29".into()),
        },
    );
    let mut order = Vec::new();
    for _ in 0..40 {
        while let Some(f) = h.take_fetch() {
            order.push(f.convo.to_string());
            h.answer(&f, vec![]);
        }
        h.advance(MS(1000));
    }
    assert!(
        order.iter().position(|c| c == "c29") <= Some(1),
        "the conversation in view goes first: {order:?}"
    );
    // 40 s at one a second (plus the one that was there): never more.
    assert!(fetch_times(&h) - start <= 41, "{}", fetch_times(&h) - start);
    let mut first: Vec<&String> = order.iter().take(30).collect();
    first.sort();
    first.dedup();
    assert_eq!(
        first.len(),
        30,
        "every conversation caught up once: {order:?}"
    );
}

#[test]
fn routine_catch_ups_are_delayed_by_urgent_ones_never_starved() {
    let config = one_fetch_a_second();
    let mut h = caught_up(config, 2);
    h.input("resume c0 (routine)", Input::Resume { convo: None });
    // c1 keeps asking urgently, every half second, for a minute.
    let mut served_c0_at = None;
    for step in 0..120 {
        h.input(
            "resume c1",
            Input::Resume {
                convo: Some("c1".into()),
            },
        );
        while let Some(f) = h.take_fetch() {
            if f.convo.as_str() == "c0" && served_c0_at.is_none() {
                served_c0_at = Some(step);
            }
            h.answer(&f, vec![]);
        }
        h.advance(MS(500));
    }
    let step = served_c0_at.expect("c0 is served despite c1");
    assert!(step <= 2 * 31, "served within max_queue_wait: step {step}");
}

#[test]
fn a_cold_start_paces_stream_opens_within_the_budget() {
    // Like the server's own bucket, the budget holds a minute's worth (180): a cold start
    // opens that many at the burst limiter's pace (8, then 80 a second), then 3 a second.
    let mut h = Harness::new(Config::default());
    for i in 0..300 {
        h.subscribe(Subscription::live(format!("c{i}")));
    }
    let burst = Config::default().budget.burst as usize;
    assert_eq!(opens(&h), burst, "the burst at once, then paced");
    h.advance(Duration::from_secs(1));
    let n = opens(&h);
    assert!(n <= burst + 80, "{n} opens in the first second");
    h.advance(Duration::from_secs(9));
    let n = opens(&h);
    assert!((180..=180 + 31).contains(&n), "{n} opens in 10 s");
    h.advance(Duration::from_secs(35));
    assert_eq!(opens(&h), 300, "every stream opened within 45 s");
}

#[test]
fn under_sustained_routine_load_the_conversation_in_view_still_goes_first() {
    // Found by the 500-conversation quota bench: once routine polls alone exceeded the
    // budget, the anti-starvation rule handed them every fetch and the conversation in view
    // waited minutes. Now it keeps at least every other fetch.
    let config = one_fetch_a_second();
    let mut h = caught_up(config, 100);
    // Let routine polls (every 30 s for conversations without a stream) pile up past
    // max_queue_wait.
    for _ in 0..120 {
        while let Some(f) = h.take_fetch() {
            h.answer(&f, vec![]);
        }
        h.advance(MS(1000));
    }
    h.input(
        "resume c7",
        Input::Resume {
            convo: Some("c7".into()),
        },
    );
    let asked = h.now();
    let mut waited = None;
    for _ in 0..30 {
        while let Some(f) = h.take_fetch() {
            if f.convo.as_str() == "c7" && waited.is_none() {
                waited = Some(h.now().since(asked));
            }
            h.answer(&f, vec![]);
        }
        if waited.is_some() {
            break;
        }
        h.advance(MS(1000));
    }
    let waited = waited.expect("c7 is fetched");
    assert!(waited <= Duration::from_secs(3), "{waited:?}");
}

#[test]
fn a_conversation_brought_into_view_is_fetched_at_once_while_catch_ups_spend_the_budget() {
    // The 500-conversation quota bench: while a cold start spent every token, a gap in the
    // conversation in view waited for the next one (seconds, with the starved queue taking
    // every other token). A reserve of the budget is kept for urgent fetches.
    let mut h = caught_up(sixty_fetches_a_minute(), 300);
    h.input("resume all", Input::Resume { convo: None });
    for _ in 0..5 {
        h.advance(MS(1000));
        while let Some(f) = h.take_fetch() {
            h.answer(&f, vec![]);
        }
    }
    assert!(
        h.machine().inflight_fetches() == 0 && fetch_times(&h) < 600,
        "the catch-ups are still waiting for the budget: {} in flight, {} fetches",
        h.machine().inflight_fetches(),
        fetch_times(&h)
    );
    h.input(
        "resume c7",
        Input::Resume {
            convo: Some("c7".into()),
        },
    );
    let f = h.take_fetch().expect("a fetch goes at once");
    assert_eq!(f.convo.as_str(), "c7");
}

#[test]
fn a_gap_found_while_a_routine_fetch_is_queued_makes_that_fetch_urgent() {
    // The 500-conversation quota bench: the conversation in view had a routine catch-up
    // queued behind a cold start when a gap opened; the gap only counted once no fetch was
    // pending, so it waited for the routine one — 25 s.
    let mut h = caught_up(sixty_fetches_a_minute(), 300);
    h.subscribe(Subscription::live("view"));
    h.open("view");
    for _ in 0..3 {
        h.advance(MS(1000));
        while let Some(f) = h.take_fetch() {
            h.answer(&f, vec![]);
        }
    }
    // Every conversation wants a routine catch-up; the budget is spent.
    h.input("resume all", Input::Resume { convo: None });
    while let Some(f) = h.take_fetch() {
        h.answer(&f, vec![]);
    }
    h.stream("view", Message::new("m1", 1, 1));
    h.stream("view", Message::new("m3", 3, 1));
    let gap = h.now();
    let mut waited = None;
    for _ in 0..40 {
        h.advance(MS(250));
        while let Some(f) = h.take_fetch() {
            if f.convo.as_str() == "view" && waited.is_none() {
                waited = Some(h.now().since(gap));
            }
            h.answer(&f, vec![]);
        }
        if waited.is_some() {
            break;
        }
    }
    let waited = waited.expect("the gap is fetched within 10 s");
    assert!(waited <= MS(750), "gap_wait, then at once: {waited:?}");
}

#[test]
fn with_hundreds_of_conversations_healthy_polls_take_at_most_half_the_fetch_budget() {
    // 500 live conversations polling every 120 s want 250 fetches a minute; the default
    // budget is 180. The healthy poll stretches so that polls take at most half of it.
    let config = Config {
        budget: Budget {
            fetches: Some(Rate { per_minute: 60 }),
            stream_opens: None,
            burst: 0,
            ..Budget::default()
        },
        ..Config::default()
    };
    let mut h = Harness::new(config);
    for i in 0..100 {
        let c = format!("c{i}");
        h.subscribe(Subscription::live(c.as_str()));
        h.open(&c);
    }
    // Let the catch-ups after the opens go (100 at 1 a second, the burst first).
    for _ in 0..200 {
        while let Some(f) = h.take_fetch() {
            h.answer(&f, vec![]);
        }
        h.advance(MS(1_000));
    }
    let before = fetch_times(&h);
    // Ten minutes of quiet, healthy streams (keepalives keep them open).
    for s in 0..600 {
        if s % 15 == 0 {
            for i in 0..100 {
                h.event(&format!("c{i}"), "keepalive", StreamEvent::Keepalive);
            }
        }
        while let Some(f) = h.take_fetch() {
            h.answer(&f, vec![]);
        }
        h.advance(MS(1_000));
    }
    let polls = fetch_times(&h) - before;
    // 100 conversations every 120 s would be 500 in ten minutes; half of 60 a minute is 300.
    assert!(polls <= 310, "{polls} polls in ten minutes");
    assert!(polls >= 250, "every conversation still polled: {polls}");
}

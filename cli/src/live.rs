//! `gapless sync`'s live view on a terminal: a line per conversation (its status in words,
//! the messages stored this run, its fetches) and an overall line, redrawn in place. The
//! lines are rendered by [`render`], a pure function; [`Live`] only draws them.

use crate::console;
use gapless::Status;
use std::time::{Duration, Instant};

/// At most this many conversation lines; past it, the most interesting ones and a summary.
pub const CAP: usize = 20;

/// What the view knows of one conversation.
#[derive(Clone, Debug, Default)]
pub struct Line {
    /// The last status the driver reported, if any yet.
    pub status: Option<Status>,
    /// Messages stored this run.
    pub stored: u64,
    /// Fetches that ended.
    pub fetches: u64,
}

/// How interesting a status is: lower first (retrying, catching up, not heard of, caught up).
fn rank(status: Option<&Status>) -> u8 {
    match status {
        Some(Status::Retrying { .. }) => 0,
        Some(Status::CatchingUp { .. }) => 1,
        None => 2,
        Some(_) => 3,
    }
}

/// A status in words for the live view; `now_ms` is the driver's clock now (for the
/// countdown to a retry).
pub fn live_words(status: Option<&Status>, now_ms: u64) -> String {
    match status {
        None => "connecting".into(),
        Some(Status::Retrying { reason, until }) => {
            let wait = until.as_millis().saturating_sub(now_ms);
            if wait < 1000 {
                format!("retrying now: {reason}")
            } else {
                format!("retrying in {}s: {reason}", wait.div_ceil(1000))
            }
        }
        Some(other) => other.to_string(),
    }
}

/// A status in words for the final summary (no clock in it).
pub fn final_words(status: Option<&Status>) -> String {
    match status {
        None => "-".into(),
        Some(Status::Retrying { reason, .. }) => format!("retrying ({reason})"),
        Some(other) => other.to_string(),
    }
}

/// The view's lines: one per conversation (in the given order when they all fit; else the
/// [`CAP`] most interesting, retrying first, then catching up, and a summary line), then the
/// overall line's text (without the spinner and clock the bar draws itself).
pub fn render(convos: &[(String, Line)], now_ms: u64, cap: usize) -> Vec<String> {
    let mut shown: Vec<&(String, Line)> = convos.iter().collect();
    let capped = convos.len() > cap;
    if capped {
        shown.sort_by_key(|(_, l)| rank(l.status.as_ref()));
        shown.truncate(cap);
    }
    let wide = shown
        .iter()
        .map(|(c, _)| c.chars().count().min(40))
        .max()
        .unwrap_or(0);
    let mut lines: Vec<String> = shown
        .iter()
        .map(|(c, l)| {
            let name: String = console::clean(c).chars().take(40).collect();
            format!(
                "{name:<wide$}  {:>6} stored  {:>5} fetches  {}",
                l.stored,
                l.fetches,
                live_words(l.status.as_ref(), now_ms)
            )
        })
        .collect();
    let count = |r: u8| {
        convos
            .iter()
            .filter(|(_, l)| rank(l.status.as_ref()) == r)
            .count()
    };
    if capped {
        let mut summary = format!(
            "({} of {} shown) {} caught up, {} catching up, {} retrying",
            shown.len(),
            convos.len(),
            count(3),
            count(1),
            count(0)
        );
        if count(2) > 0 {
            summary.push_str(&format!(", {} connecting", count(2)));
        }
        lines.push(summary);
    }
    let stored: u64 = convos.iter().map(|(_, l)| l.stored).sum();
    let fetches: u64 = convos.iter().map(|(_, l)| l.fetches).sum();
    lines.push(format!(
        "{} conversation(s): {} caught up, {} retrying; {stored} message(s) stored, {fetches} fetches",
        convos.len(),
        count(3),
        count(0),
    ));
    lines
}

/// The live view: a [`indicatif::MultiProgress`] of one-line bars, on stderr.
pub struct Live {
    multi: indicatif::MultiProgress,
    bars: Vec<indicatif::ProgressBar>,
    started: Instant,
    drawn: Option<Instant>,
}

impl Live {
    /// Lines for `convos` conversations; `started` is about when the driver's clock began.
    pub fn new(convos: usize, started: Instant) -> Live {
        let multi = indicatif::MultiProgress::new();
        let plain = indicatif::ProgressStyle::with_template("{wide_msg}").expect("template");
        let mut bars: Vec<indicatif::ProgressBar> = (0..convos.min(CAP)
            + usize::from(convos > CAP))
            .map(|_| {
                let bar = multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(plain.clone());
                bar
            })
            .collect();
        let overall = multi.add(indicatif::ProgressBar::new_spinner());
        overall.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}")
                .expect("template"),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        bars.push(overall);
        Live {
            multi,
            bars,
            started,
            drawn: None,
        }
    }

    /// What warnings print around.
    pub fn multi(&self) -> &indicatif::MultiProgress {
        &self.multi
    }

    /// Redraws, at most every 100 ms unless `now`.
    pub fn draw(&mut self, convos: &[(String, Line)], now: bool) {
        if !now
            && self
                .drawn
                .is_some_and(|d| d.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let ms = self.started.elapsed().as_millis() as u64;
        for (bar, line) in self.bars.iter().zip(render(convos, ms, CAP)) {
            bar.set_message(line);
        }
    }

    /// Takes the view off the terminal.
    pub fn clear(self) {
        for bar in &self.bars {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapless::{Seq, Time, Trouble};

    fn line(status: Option<Status>, stored: u64, fetches: u64) -> Line {
        Line {
            status,
            stored,
            fetches,
        }
    }

    #[test]
    fn all_fit_in_their_order() {
        let convos = vec![
            (
                "alpha".to_string(),
                line(Some(Status::CaughtUp { seq: Seq(40) }), 40, 2),
            ),
            (
                "b".to_string(),
                line(
                    Some(Status::Retrying {
                        reason: Trouble::Unreachable,
                        until: Time::from_millis(5_200),
                    }),
                    0,
                    3,
                ),
            ),
            ("c".to_string(), line(None, 0, 0)),
        ];
        assert_eq!(
            render(&convos, 2_000, CAP),
            vec![
                "alpha      40 stored      2 fetches  caught up (seq 40)",
                "b           0 stored      3 fetches  retrying in 4s: the server cannot be reached",
                "c           0 stored      0 fetches  connecting",
                "3 conversation(s): 1 caught up, 1 retrying; 40 message(s) stored, 5 fetches",
            ]
        );
    }

    #[test]
    fn past_the_cap_the_interesting_ones_and_a_summary() {
        let mut convos: Vec<(String, Line)> = (0..25)
            .map(|i| {
                (
                    format!("c{i:02}"),
                    line(Some(Status::CaughtUp { seq: Seq(i) }), i, 1),
                )
            })
            .collect();
        convos[24].1.status = Some(Status::CatchingUp { seq: Seq(3) });
        convos[23].1.status = Some(Status::Retrying {
            reason: Trouble::RateLimited,
            until: Time::from_millis(900),
        });
        let lines = render(&convos, 1_000, CAP);
        assert_eq!(lines.len(), CAP + 2);
        assert!(
            lines[0].starts_with("c23")
                && lines[0].ends_with("retrying now: the server's rate limit")
        );
        assert!(lines[1].starts_with("c24") && lines[1].ends_with("catching up (at seq 3)"));
        assert!(lines[2].starts_with("c00"));
        assert_eq!(
            lines[CAP],
            "(20 of 25 shown) 23 caught up, 1 catching up, 1 retrying"
        );
        assert!(lines[CAP + 1].starts_with("25 conversation(s): 23 caught up, 1 retrying;"));
    }

    #[test]
    fn final_words_have_no_clock() {
        let retrying = Status::Retrying {
            reason: Trouble::Unauthorized,
            until: Time::from_millis(9),
        };
        assert_eq!(
            final_words(Some(&retrying)),
            "retrying (the server refuses the credentials)"
        );
        assert_eq!(final_words(None), "-");
    }
}

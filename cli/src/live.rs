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
    /// The highest seq delivered this run (a status's seq is where it stood when its kind
    /// changed: "caught up" stays while messages keep coming).
    pub seq: u64,
    /// Refused for good (403, not a member…): no longer synced, whatever its last status.
    pub refused: bool,
}

/// How interesting a line is: lower first (retrying, refused, catching up, not heard of,
/// caught up).
fn rank(line: &Line) -> u8 {
    match line.status {
        _ if line.refused => 1,
        Some(Status::Retrying { .. }) => 0,
        Some(Status::CatchingUp { .. }) => 2,
        None => 3,
        Some(_) => 4,
    }
}

/// A line's status in words for the live view; `now_ms` is the driver's clock now (for the
/// countdown to a retry).
pub fn live_words(line: &Line, now_ms: u64) -> String {
    match line.status {
        _ if line.refused => "refused: no longer synced".into(),
        None => "connecting".into(),
        Some(Status::Retrying { reason, until }) => {
            let wait = until.as_millis().saturating_sub(now_ms);
            if wait < 1000 {
                format!("retrying now: {reason}")
            } else {
                format!("retrying in {}s: {reason}", wait.div_ceil(1000))
            }
        }
        Some(other) => settled(&other, line.seq),
    }
}

/// Caught up or catching up, at the later of its status's seq and the last one delivered.
fn settled(status: &Status, seq: u64) -> String {
    match *status {
        Status::CaughtUp { seq: at } => format!("caught up (seq {})", at.0.max(seq)),
        Status::CatchingUp { seq: at } => format!("catching up (at seq {})", at.0.max(seq)),
        other => other.to_string(),
    }
}

/// A line's status in words for the final summary (no clock in it).
pub fn final_words(line: &Line) -> String {
    match line.status {
        _ if line.refused => "stopped".into(),
        None => "-".into(),
        Some(Status::Retrying { reason, .. }) => format!("retrying ({reason})"),
        Some(other) => settled(&other, line.seq),
    }
}

/// The view's lines: one per conversation (in the given order when they all fit; else the
/// [`CAP`] most interesting, retrying first, then catching up, and a summary line), then the
/// overall line's text (without the spinner and clock the bar draws itself).
pub fn render(convos: &[(String, Line)], now_ms: u64, cap: usize) -> Vec<String> {
    let mut shown: Vec<&(String, Line)> = convos.iter().collect();
    let capped = convos.len() > cap;
    if capped {
        shown.sort_by_key(|(_, l)| rank(l));
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
                live_words(l, now_ms)
            )
        })
        .collect();
    let count = |r: u8| convos.iter().filter(|(_, l)| rank(l) == r).count();
    if capped {
        let mut summary = format!(
            "({} of {} shown) {} caught up, {} catching up, {} retrying",
            shown.len(),
            convos.len(),
            count(4),
            count(2),
            count(0)
        );
        for (r, what) in [(1, "refused"), (3, "connecting")] {
            if count(r) > 0 {
                summary.push_str(&format!(", {} {what}", count(r)));
            }
        }
        lines.push(summary);
    }
    let stored: u64 = convos.iter().map(|(_, l)| l.stored).sum();
    let fetches: u64 = convos.iter().map(|(_, l)| l.fetches).sum();
    lines.push(format!(
        "{} conversation(s): {} caught up, {} retrying; {stored} message(s) stored, {fetches} fetches",
        convos.len(),
        count(4),
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
            ..Line::default()
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
        convos[22].1.refused = true;
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
        assert!(lines[1].starts_with("c22") && lines[1].ends_with("refused: no longer synced"));
        assert!(lines[2].starts_with("c24") && lines[2].ends_with("catching up (at seq 3)"));
        assert!(lines[3].starts_with("c00"));
        assert_eq!(
            lines[CAP],
            "(20 of 25 shown) 22 caught up, 1 catching up, 1 retrying, 1 refused"
        );
        assert!(lines[CAP + 1].starts_with("25 conversation(s): 22 caught up, 1 retrying;"));
    }

    #[test]
    fn final_words_have_no_clock() {
        let retrying = Status::Retrying {
            reason: Trouble::Unauthorized,
            until: Time::from_millis(9),
        };
        assert_eq!(
            final_words(&line(Some(retrying), 0, 0)),
            "retrying (the server refuses the credentials)"
        );
        assert_eq!(final_words(&line(None, 0, 0)), "-");
        // Caught up at 3, and 9 delivered since: it says 9.
        let mut later = line(Some(Status::CaughtUp { seq: Seq(3) }), 6, 1);
        later.seq = 9;
        assert_eq!(final_words(&later), "caught up (seq 9)");
        later.refused = true;
        assert_eq!(final_words(&later), "stopped");
        assert_eq!(live_words(&later, 0), "refused: no longer synced");
    }
}

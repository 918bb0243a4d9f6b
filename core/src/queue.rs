//! The command queue, and the checkpoint that follows every run of a conversation's
//! deliveries.
//!
//! A store must keep a conversation's checkpoint with the messages (and skipped and
//! unreachable ranges) it covers. Handing a copy of the checkpoint out with every message
//! costs a clone and doubles the size of every command, and all but the last copy of a run
//! are thrown away. So a delivery carries no checkpoint; after the last command of a run
//! stands one [`Command::Checkpoint`]. It is written lazily: the queue holds a placeholder
//! (a *mark*), and the conversation's checkpoint is copied into it when it is polled. A mark
//! stays valid as long as nothing changes the checkpoint after it: before a change, a mark
//! that is the last command is taken back (it follows the new command instead: a run of
//! deliveries keeps one mark at its end), and one with other commands after it is filled
//! with the checkpoint as it is then (frozen).

use crate::timers::Key;
use crate::{Checkpoint, Command, ConvoId};
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: VecDeque<Command>,
    /// Commands popped so far: the first item's position since the machine was made.
    popped: u64,
    /// The marks still in the queue (position, conversation), in order. A mark whose
    /// conversation no longer points at it was frozen or taken back.
    marks: VecDeque<(u64, Key)>,
    /// Where the commands added since `watch` begin.
    watched: usize,
}

/// A command popped from the queue, and the conversation whose checkpoint it must be filled
/// with if it is a mark.
pub(crate) struct Popped {
    pub(crate) command: Command,
    pub(crate) mark: Option<(u64, Key)>,
}

impl Queue {
    pub(crate) fn push(&mut self, command: Command) {
        self.items.push_back(command);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.items.len()
    }

    /// Starts noting which commands are added from now on (see `added`).
    pub(crate) fn watch(&mut self) {
        self.watched = self.items.len();
    }

    /// The commands added since `watch` (a mark taken back and put again counts as added).
    pub(crate) fn added(&self) -> impl Iterator<Item = &Command> {
        self.items.range(self.watched.min(self.items.len())..)
    }

    pub(crate) fn pop(&mut self) -> Option<Popped> {
        let command = self.items.pop_front()?;
        let at = self.popped;
        self.popped += 1;
        while self.marks.front().is_some_and(|&(p, _)| p < at) {
            self.marks.pop_front();
        }
        let mark = match self.marks.front() {
            Some(&(p, key)) if p == at => {
                self.marks.pop_front();
                Some((p, key))
            }
            _ => None,
        };
        Some(Popped { command, mark })
    }

    /// Before the checkpoint `cp` of the conversation whose mark is `mark` changes: takes
    /// its mark back if it is the last command (returned, to be put back after the change),
    /// or freezes it with `cp` as it is now.
    pub(crate) fn unmark(&mut self, mark: &mut Option<u64>, cp: &Checkpoint) -> Option<Command> {
        let at = (*mark)?;
        if !self.items.is_empty() && at == self.popped + self.items.len() as u64 - 1 {
            *mark = None;
            self.marks.pop_back();
            let taken = self.items.pop_back();
            self.watched = self.watched.min(self.items.len());
            return taken;
        }
        self.freeze(mark, cp);
        None
    }

    /// Fills the conversation's mark, if any, with `cp` as it is now (the conversation goes
    /// away: nothing will change it again).
    pub(crate) fn freeze(&mut self, mark: &mut Option<u64>, cp: &Checkpoint) {
        let Some(at) = mark.take() else {
            return;
        };
        let Some(index) = at.checked_sub(self.popped) else {
            return;
        };
        if let Some(Command::Checkpoint { checkpoint, .. }) = self.items.get_mut(index as usize) {
            *checkpoint = cp.clone();
        }
    }

    /// Puts a mark for the conversation `key` (`convo`) last: `placeholder` is one taken back
    /// by `unmark`, else a new one is made.
    pub(crate) fn mark(
        &mut self,
        key: Key,
        mark: &mut Option<u64>,
        convo: &ConvoId,
        placeholder: Option<Command>,
    ) {
        let at = self.popped + self.items.len() as u64;
        let placeholder = placeholder.unwrap_or_else(|| Command::Checkpoint {
            convo: convo.clone(),
            checkpoint: Checkpoint::default(),
        });
        self.items.push_back(placeholder);
        self.marks.push_back((at, key));
        *mark = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Seq, StreamId};

    fn cp(seq: u64) -> Checkpoint {
        Checkpoint {
            seq: Seq(seq),
            ..Checkpoint::default()
        }
    }

    const KEY: Key = Key { slot: 0, gen: 0 };

    #[test]
    fn a_run_keeps_one_mark_at_its_end_and_a_mark_with_commands_after_it_is_frozen() {
        let convo = ConvoId::from("c");
        let other = Command::CloseShared {
            stream: StreamId(9),
        };
        let mut q = Queue::default();
        let mut mark = None;
        // Two deliveries (stood for by `other`) in a run: one mark, after the second.
        for _ in 0..2 {
            let back = q.unmark(&mut mark, &cp(0));
            q.push(other.clone());
            q.mark(KEY, &mut mark, &convo, back);
        }
        assert_eq!(q.len(), 3);
        // Something else, then a change: the mark is frozen with the checkpoint before it.
        q.push(other.clone());
        let back = q.unmark(&mut mark, &cp(2));
        assert!(back.is_none());
        q.push(other.clone());
        q.mark(KEY, &mut mark, &convo, back);
        let kinds: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|p| match p.command {
                Command::Checkpoint { checkpoint, .. } => {
                    format!("cp {} {}", checkpoint.seq, p.mark.is_some())
                }
                _ => "x".to_string(),
            })
            .collect();
        // The frozen mark still says which conversation it was; the machine sees that the
        // conversation points elsewhere and hands it on as it is.
        assert_eq!(kinds, ["x", "x", "cp 2 true", "x", "x", "cp 0 true"]);
        assert_eq!(mark, Some(5));
    }

    #[test]
    fn what_an_input_added_includes_a_delivery_that_took_the_mark_back() {
        let convo = ConvoId::from("c");
        let delivery = Command::CloseShared {
            stream: StreamId(1),
        };
        let mut q = Queue::default();
        let mut mark = None;
        q.push(delivery.clone());
        q.mark(KEY, &mut mark, &convo, None);
        // The next input, not drained in between: its delivery goes where the mark was.
        q.watch();
        let back = q.unmark(&mut mark, &cp(1));
        q.push(delivery.clone());
        q.mark(KEY, &mut mark, &convo, back);
        let added: Vec<bool> = q
            .added()
            .map(|c| matches!(c, Command::Checkpoint { .. }))
            .collect();
        assert_eq!(added, [false, true], "the new delivery, then the mark");
    }
}

//! Behaviour 1: no allocation inside the machine per in-order message. The payload and the
//! id are moved through, never copied. This test counts allocations; it does not time.

use gapless::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|a| a.get())
}

fn message_input(convo: &ConvoId, stream: StreamId, seq: u64) -> Input {
    let mut message = Message::new(format!("01JD8M{seq:020}"), seq, 3);
    message.payload = vec![7; 256];
    Input::StreamEvent {
        convo: convo.clone(),
        stream,
        event: StreamEvent::Message {
            cursor: Some(Cursor::new(format!("01JD8C{seq:020}"))),
            message,
        },
    }
}

#[test]
fn in_order_messages_cost_no_allocation_inside_the_machine() {
    let convo = ConvoId::from("c");
    let mut m = SyncMachine::new(Config::default()).unwrap();
    let t = Time::ZERO;
    m.handle(t, Input::Subscribe(Subscription::live(convo.clone())))
        .unwrap();
    let Some(Command::OpenStream { stream, .. }) = m.poll_command() else {
        panic!("expected OpenStream")
    };
    m.handle(
        t,
        Input::StreamOpened {
            convo: convo.clone(),
            stream,
        },
    )
    .unwrap();
    while let Some(c) = m.poll_command() {
        if let Command::Fetch(f) = c {
            let page = Page::new(f.id, vec![]);
            m.handle(t, Input::FetchPage(page)).unwrap();
        }
    }
    // Warm up: queues and the dedup window reach their steady capacity.
    for seq in 1..=1_000 {
        m.handle(t, message_input(&convo, stream, seq)).unwrap();
        while m.poll_command().is_some() {}
    }
    // Inputs are built outside the measured section, as an adapter's decoder would.
    let building = allocations();
    let inputs: Vec<Input> = (1_001..=11_000)
        .map(|seq| message_input(&convo, stream, seq))
        .collect();
    assert!(
        allocations() - building >= 30_000,
        "the counter sees allocations"
    );
    let mut delivered = 0;
    let before = allocations();
    for input in inputs {
        m.handle(t, input).unwrap();
        while let Some(c) = m.poll_command() {
            delivered += usize::from(matches!(c, Command::Deliver(_)));
        }
    }
    let allocated = allocations() - before;
    assert_eq!(delivered, 10_000);
    assert_eq!(
        allocated, 0,
        "{allocated} allocations for 10,000 in-order messages"
    );
}

//! Unit tests of the outbound queues.
use super::*;

#[test]
fn overflow_by_count_closes_with_1013() {
    let (h, q) = channel(1, false, Role::Write, 2, 1 << 20);
    assert!(h.send_binary(Bytes::from_static(b"a")));
    assert!(h.send_binary(Bytes::from_static(b"b")));
    assert!(!h.send_binary(Bytes::from_static(b"c")));
    assert_eq!(q.close_reason().map(|r| r.0), Some(CloseCode::Overloaded));
    assert!(
        !h.send_binary(Bytes::from_static(b"d")),
        "closed stays closed"
    );
}

#[test]
fn answers_are_coalesced_and_count_against_the_budget() {
    let (h, q) = channel(1, false, Role::Read, 1024, 100);
    // A peer asking a thousand times, never reading, holds one answer of each kind.
    for i in 0..1000u32 {
        let state = Bytes::from(vec![0u8; 40 + (i % 3) as usize]);
        assert!(h.send_answer(Reply::State, state));
        assert!(h.send_answer(Reply::Awareness, Bytes::from_static(b"aw")));
    }
    assert!(h.answer_waiting(Reply::State));
    // The last state answer (i = 999: 40 bytes) and one awareness answer.
    assert_eq!(h.queued_bytes(), 42);
    assert_eq!(q.try_recv().map(|m| m.len()), Some(40));
    assert!(!h.answer_waiting(Reply::State));
    assert!(h.answer_waiting(Reply::Awareness));
    assert!(q.try_recv().is_some());
    assert!(q.try_recv().is_none(), "nothing else was queued");
    // One answer larger than the whole budget passes while the backlog is within it; once
    // the backlog is past the budget, answers count like anything else (1013).
    // Documents sharing a Hocuspocus socket keep their own answers.
    let (root, q) = channel(3, false, Role::Read, 1024, 1 << 20);
    let a = root.for_document(31, Role::Read, Bytes::from_static(b"\x01a"));
    let b = root.for_document(32, Role::Read, Bytes::from_static(b"\x01b"));
    assert!(a.send_answer(Reply::State, Bytes::from_static(b"state of a")));
    assert!(b.send_answer(Reply::State, Bytes::from_static(b"state of b")));
    assert!(a.answer_waiting(Reply::State) && b.answer_waiting(Reply::State));
    assert!(q.try_recv().is_some() && q.try_recv().is_some());
    assert!(q.try_recv().is_none());

    let (h, q) = channel(2, false, Role::Read, 1024, 100);
    assert!(h.send_answer(Reply::State, Bytes::from(vec![0u8; 500])));
    assert!(!h.send_answer(Reply::Awareness, Bytes::from_static(b"aw")));
    assert_eq!(q.close_reason().map(|r| r.0), Some(CloseCode::Overloaded));
}

#[test]
fn overflow_by_bytes_closes_with_1013() {
    let (h, q) = channel(1, false, Role::Write, 100, 10);
    assert!(h.send_binary(Bytes::from_static(b"12345")));
    assert!(!h.send_binary(Bytes::from_static(b"123456")));
    assert_eq!(q.close_reason().map(|r| r.0), Some(CloseCode::Overloaded));
}

#[test]
fn one_large_message_fits_an_empty_queue() {
    let (h, _q) = channel(1, false, Role::Write, 100, 10);
    assert!(h.send_binary(Bytes::from(vec![0u8; 50])));
    assert!(!h.send_binary(Bytes::from_static(b"x")));
}

#[test]
fn a_gone_receiver_refuses_without_closing_as_slow() {
    let (h, q) = channel(1, false, Role::Write, 2, 1 << 20);
    drop(q);
    assert!(!h.send_binary(Bytes::from_static(b"a")));
    assert!(!h.is_closed(), "not a slow consumer, just gone");
}

#[tokio::test]
async fn recv_wakes_on_a_later_send_and_gives_back_burst_capacity() {
    let (h, q) = channel(1, false, Role::Write, 1000, 1 << 20);
    let waiter = tokio::spawn(async move {
        let Next::Message(first) = q.next().await else {
            panic!("not closed");
        };
        (first, q)
    });
    tokio::task::yield_now().await;
    assert!(h.send_binary(Bytes::from_static(b"x")));
    let (first, q) = waiter.await.expect("join");
    assert!(matches!(first, Outbound::Binary(ref b) if b.as_ref() == b"x"));
    for _ in 0..500 {
        assert!(h.send_binary(Bytes::from_static(b"y")));
    }
    while let Some(m) = q.try_recv() {
        q.written(&m);
    }
    assert_eq!(h.queue.items().q.capacity(), KEEP_CAPACITY);
}

#[tokio::test]
async fn a_close_wakes_the_task_and_comes_before_queued_messages() {
    let (h, q) = channel(1, false, Role::Write, 100, 1 << 20);
    let waiter = tokio::spawn(async move {
        q.closed().await;
        q
    });
    tokio::task::yield_now().await;
    assert!(
        h.send_binary(Bytes::from_static(b"x")),
        "a message is not a close"
    );
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    h.close(CloseCode::Restarting, "bye");
    h.close(CloseCode::Overloaded, "second request loses");
    let q = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("join");
    assert!(matches!(q.next().await, Next::Close));
    assert_eq!(
        q.close_reason(),
        Some(&(CloseCode::Restarting, "bye".to_string()))
    );
    assert!(!h.send_binary(Bytes::from_static(b"y")), "closed refuses");
}

#[tokio::test]
async fn close_all_reaches_open_connections_and_later_ones_only_while_they_live() {
    let set = Arc::new(Connections::default());
    let (mut slot, before) = set.reserve();
    assert_eq!(before, 0);
    let (h, q) = channel(1, false, Role::Write, 100, 1 << 20);
    slot.attach(1, &q);
    assert_eq!(set.count(), 1);
    set.close_all(CloseCode::Restarting, "server shutting down");
    assert!(h.is_closed());
    assert!(matches!(q.next().await, Next::Close));
    // Attached after the shutdown began: closed at once.
    let (mut late, _) = set.reserve();
    let (h2, q2) = channel(2, false, Role::Write, 100, 1 << 20);
    late.attach(2, &q2);
    assert_eq!(q2.close_reason().map(|r| r.0), Some(CloseCode::Restarting));
    assert!(h2.is_closed());
    drop((slot, late));
    assert_eq!(set.count(), 0);
    assert!(set.lock().is_empty(), "slots take their entries with them");
}

#[test]
fn written_messages_free_their_bytes() {
    let (h, q) = channel(1, false, Role::Write, 100, 10);
    assert!(h.send_binary(Bytes::from_static(b"1234567")));
    let m = q.try_recv().expect("queued");
    q.written(&m);
    assert!(h.send_binary(Bytes::from_static(b"1234567")));
}

#[test]
fn the_set_sums_what_waits_in_its_connections_queues() {
    let set = Arc::new(Connections::default());
    let (mut a, _) = set.reserve();
    let (mut b, _) = set.reserve();
    let (ha, qa) = channel(1, false, Role::Write, 100, 1 << 20);
    let (hb, qb) = channel(2, false, Role::Write, 100, 1 << 20);
    a.attach(1, &qa);
    b.attach(2, &qb);
    assert_eq!(set.queued(), (0, 0));
    assert!(ha.send_binary(Bytes::from_static(b"12345")));
    assert!(ha.send_binary(Bytes::from_static(b"12")));
    assert!(hb.send_binary(Bytes::from_static(b"123")));
    assert_eq!(set.queued(), (3, 10));
    let m = qa.try_recv().expect("queued");
    assert_eq!(set.queued(), (2, 10), "bytes count until written");
    qa.written(&m);
    assert_eq!(set.queued(), (2, 5));
    drop(b);
    assert_eq!(
        set.queued(),
        (1, 2),
        "a closed connection's queue no longer counts"
    );
}

#[test]
fn a_drained_queue_keeps_no_memory_for_its_answers_either() {
    let (h, q) = channel(1, false, Role::Write, 1024, 1 << 20);
    // What every connection sees first: its SyncStep1 answered, then awareness, then updates.
    assert!(h.send_answer(Reply::Step1, Bytes::from_static(b"step2")));
    assert!(h.send_answer(Reply::Awareness, Bytes::from_static(b"aw")));
    assert!(h.send_binary(Bytes::from_static(b"update")));
    while q.try_recv().is_some() {}
    let items = q.queue.items();
    // An idle connection holds neither the queue's buffer nor the list of waiting answers
    // (it kept 64 bytes for the latter in every connection before).
    assert_eq!(items.q.capacity(), 0);
    assert_eq!(items.waiting.capacity(), 0);
}

//! Both sides of the protocol together, with no sockets: each test is a
//! conversation (or an attack on one) between a [`ClientSecurity`] and a
//! [`ServerSecurity`], with the clock given.

use std::time::{Duration, Instant};

use crate::channel::{refusal as refusal_in_words, told_operator};
use crate::envelope::MessageId;
use crate::secure::client::{
    ClientSecurity, ClientStep, KeySource, REKEY_AFTER, REKEY_AFTER_MESSAGES, RETRIES_PER_MESSAGE,
    SecureFailure,
};
use crate::secure::frame::{Frame, Refusal, Sealed};
use crate::secure::keys::{AllowList, Identity, KEY_LEN};
use crate::secure::mac::Mac1Key;
use crate::secure::server::{Opened, REJECT_AFTER, ServerSecurity};

const ID: MessageId = MessageId {
    session: 7,
    sequence: 1,
};

fn message(sequence: u64) -> MessageId {
    MessageId { sequence, ..ID }
}

fn identity() -> Identity {
    Identity::generate().unwrap()
}

/// A server and a client that trusts its key.
fn pair() -> (ClientSecurity, ServerSecurity) {
    let server = identity();
    let client = ClientSecurity::new(identity(), server.public_key());
    (client, ServerSecurity::new(server, None))
}

/// The reply frame of an answer (a refusal included), and what the
/// operator is told of it, in the words the loops' channel gives it.
fn answer_of(opened: &Opened) -> (Vec<u8>, String) {
    match opened {
        Opened::Answer { reply, event } => (reply.clone(), told_operator(*event).0),
        Opened::Refused(refused) => {
            let (reply, notice, _) = refusal_in_words(*refused);
            (reply, notice)
        }
        Opened::Message { .. } => panic!("expected an answer, got a message"),
    }
}

/// The reply frame of an answer.
fn reply_of(opened: Opened) -> Vec<u8> {
    answer_of(&opened).0
}

/// The client's step on `reply` to message `id` (envelope id `id`).
fn step(
    client: &mut ClientSecurity,
    id: MessageId,
    text: &[u8],
    reply: Vec<u8>,
    now: Instant,
) -> Result<ClientStep, SecureFailure> {
    client.step(id, Some(text), Some(id), &[reply], now)
}

/// Sends message `id` through a handshake if one is due: returns the
/// server's view of the sealed message and the sealed frame.
fn send(
    client: &mut ClientSecurity,
    server: &mut ServerSecurity,
    id: MessageId,
    text: &[u8],
    now: Instant,
) -> (Opened, Vec<u8>) {
    let mut body = client.opening(id, text, now).unwrap();
    if Frame::parse(&body).is_some_and(|frame| matches!(frame, Frame::Message { .. })) {
        return (server.open(b"host", &[body.clone()], Some(id), now), body);
    }
    let mut answer = server.open(b"host", &[body], Some(id), now);
    body = match step(client, id, text, reply_of(answer), now).unwrap() {
        ClientStep::Proven(Some(sealed)) | ClientStep::Send(sealed) => sealed,
        other => panic!("the handshake completes, got {other:?}"),
    };
    answer = server.open(b"host", std::slice::from_ref(&body), Some(id), now);
    (answer, body)
}

/// The session a message opened in; panics if it did not open.
fn opened_session(opened: &Opened) -> u64 {
    match opened {
        Opened::Message { session, .. } => *session,
        answer => panic!("expected a message, got: {}", answer_of(answer).1),
    }
}

fn refusal(opened: &Opened) -> Refusal {
    match Frame::parse(&answer_of(opened).0) {
        Some(Frame::Refused { reason, .. }) => reason,
        other => panic!("expected a clear refusal, got {other:?}"),
    }
}

#[test]
fn a_message_and_its_reply_cross_encrypted() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    let (opened, sealed) = send(&mut client, &mut server, ID, b"hi", now);
    assert!(!sealed.windows(2).any(|w| w == b"hi"));
    let Opened::Message {
        session,
        client: key,
        id,
        text,
    } = opened
    else {
        panic!("the message opens");
    };
    assert_eq!(
        (key, id, text.as_slice()),
        (client.public_key(), ID, &b"hi"[..])
    );
    let reply = server.seal_reply(session, Sealed::Text, ID, b"hello back");
    assert_eq!(
        step(&mut client, ID, b"hi", reply, now),
        Ok(ClientStep::Reply(b"hello back".to_vec()))
    );
}

/// Issue 24, bug 1: a victim's sealed message replayed from another host
/// (or garbage with the victim's server index) is refused in clear, and
/// nothing is sealed in the victim's session, so the victim's next genuine
/// reply still opens.
#[test]
fn a_frame_that_does_not_open_is_answered_in_clear_and_moves_no_session() {
    let (mut victim, mut server) = pair();
    let now = Instant::now();
    let (opened, recorded) = send(&mut victim, &mut server, ID, b"pay 100", now);
    let session = opened_session(&opened);
    let Some(Frame::Message { server_index, .. }) = Frame::parse(&recorded) else {
        panic!("a sealed message");
    };
    let garbage = Frame::Message {
        server_index,
        sealed: &[
            0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ],
    }
    .encode();
    for forged in [recorded, garbage] {
        let answer = server.open(b"attacker", &[forged], Some(ID), now);
        assert_eq!(refusal(&answer), Refusal::NotAuthentic);
        let (_, notice) = answer_of(&answer);
        assert!(
            !notice.contains(&victim.public_key().fingerprint()),
            "the notice does not blame the victim: {notice}"
        );
    }
    let reply = server.seal_reply(session, Sealed::Text, ID, b"paid");
    assert_eq!(
        step(&mut victim, ID, b"pay 100", reply, now),
        Ok(ClientStep::Reply(b"paid".to_vec()))
    );
    let (opened, _) = send(&mut victim, &mut server, message(2), b"next", now);
    assert_eq!(opened_session(&opened), session, "the same session goes on");
}

/// Issue 24, bug 2: a duplicate of the waiting message, made on the path,
/// gets a clear refusal the client does not believe: it sends a copy in a
/// new session (the server's answer memory makes a copy harmless) and the
/// operator's reply, sealed in the session of the copy, is shown.
#[test]
fn a_duplicate_of_the_waiting_message_makes_no_refusal_the_client_believes() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    let (opened, sealed) = send(&mut client, &mut server, ID, b"hello", now);
    opened_session(&opened);
    let refused = reply_of(server.open(b"host", &[sealed], Some(ID), now));
    let ClientStep::Send(hello) = step(&mut client, ID, b"hello", refused, now).unwrap() else {
        panic!("the client shakes hands again rather than fail");
    };
    let answer = reply_of(server.open(b"host", &[hello], Some(ID), now));
    let ClientStep::Send(copy) = step(&mut client, ID, b"hello", answer, now).unwrap() else {
        panic!("the copy follows the new handshake, unannounced");
    };
    let copy = server.open(b"host", &[copy], Some(ID), now);
    let reply = server.seal_reply(opened_session(&copy), Sealed::Text, ID, b"hi there");
    assert_eq!(
        step(&mut client, ID, b"hello", reply, now),
        Ok(ClientStep::Reply(b"hi there".to_vec()))
    );
}

/// Clear refusals of the waiting message are followed a few times, then
/// reported once as still waiting, and never end the chat.
#[test]
fn clear_refusals_inside_a_session_are_retried_a_few_times_and_never_believed() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    send(&mut client, &mut server, ID, b"hi", now);
    let (opened, _) = send(&mut client, &mut server, message(2), b"two", now);
    opened_session(&opened);
    let forged = |reason| {
        Frame::Refused {
            reason,
            text: b"you are refused",
        }
        .encode()
    };
    for reason in [Refusal::NotAllowed, Refusal::WrongKey] {
        assert_eq!(
            step(&mut client, message(2), b"two", forged(reason), now),
            Ok(ClientStep::Ignore),
            "{reason:?}"
        );
    }
    // Refusals of another message change nothing either.
    let other = client.step(
        message(2),
        Some(b"two"),
        Some(ID),
        &[forged(Refusal::NotAuthentic)],
        now,
    );
    assert_eq!(other, Ok(ClientStep::Ignore));
    let mut steps = Vec::new();
    for _ in 0..RETRIES_PER_MESSAGE + 2 {
        let refusal = forged(Refusal::NotAuthentic);
        steps.push(step(&mut client, message(2), b"two", refusal, now).unwrap());
    }
    let retries = RETRIES_PER_MESSAGE as usize;
    assert!(
        steps[..retries]
            .iter()
            .all(|step| matches!(step, ClientStep::Send(_)))
    );
    assert_eq!(
        steps[retries..],
        [ClientStep::StillWaiting, ClientStep::Ignore]
    );
}

/// A reply that does not open (forged, or altered on the way) ends
/// nothing: the session's nonces can no longer meet, so the client shakes
/// hands again and sends a copy.
#[test]
fn a_reply_that_does_not_open_makes_the_client_shake_hands_again() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    let (opened, _) = send(&mut client, &mut server, ID, b"hi", now);
    let mut reply = server.seal_reply(opened_session(&opened), Sealed::Text, ID, b"ok");
    let last = reply.len() - 1;
    reply[last] ^= 1;
    let Ok(ClientStep::Send(hello)) = step(&mut client, ID, b"hi", reply, now) else {
        panic!("the client shakes hands again");
    };
    assert!(matches!(
        Frame::parse(&hello),
        Some(Frame::HandshakeInit { .. })
    ));
}

/// Issue 24, bug 4 (the client's half): a reply sealed in a session the
/// client left (after a reconnect) brings a copy in the current session,
/// which the server answers there.
#[test]
fn a_reply_sealed_in_a_session_the_client_left_brings_a_copy() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    let (opened, _) = send(&mut client, &mut server, ID, b"hi", now);
    let old = opened_session(&opened);
    client.reset();
    let (opened, _) = send(&mut client, &mut server, ID, b"hi", now);
    opened_session(&opened);
    let stale = server.seal_reply(old, Sealed::Text, ID, b"answer");
    let Ok(ClientStep::Send(copy)) = step(&mut client, ID, b"hi", stale, now) else {
        panic!("a copy is sent in the current session");
    };
    assert!(matches!(Frame::parse(&copy), Some(Frame::Message { .. })));
    // A reply of a session it never had is nobody's business.
    let stranger = Frame::Reply {
        client_index: 42,
        sealed: b"whatever",
    }
    .encode();
    assert_eq!(
        step(&mut client, ID, b"hi", stranger, now),
        Ok(ClientStep::Ignore)
    );
}

#[test]
fn an_altered_message_is_refused_and_the_session_survives() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    send(&mut client, &mut server, ID, b"hi", now);
    let next = message(2);
    let mut altered = client.opening(next, b"second", now).unwrap();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(
        refusal(&server.open(b"host", &[altered.clone()], Some(next), now)),
        Refusal::NotAuthentic
    );
    altered[last] ^= 1;
    assert!(matches!(
        server.open(b"host", &[altered.clone()], Some(next), now),
        Opened::Message { text, .. } if text == b"second"
    ));
    // Its id altered in the envelope: refused, and the nonce not spent.
    let third = client.opening(message(3), b"third", now).unwrap();
    assert_eq!(
        refusal(&server.open(b"host", std::slice::from_ref(&third), Some(message(9)), now)),
        Refusal::NotAuthentic
    );
    assert!(matches!(
        server.open(b"host", &[third], Some(message(3)), now),
        Opened::Message { .. }
    ));
}

#[test]
fn a_wrong_server_key_and_a_key_off_the_allow_list_are_refused() {
    let mut server = ServerSecurity::new(identity(), None);
    let mut client = ClientSecurity::new(identity(), identity().public_key());
    let now = Instant::now();
    let hello = client.opening(ID, b"hi", now).unwrap();
    let answer = server.open(b"host", &[hello], Some(ID), now);
    assert_eq!(refusal(&answer), Refusal::WrongKey);
    assert!(matches!(
        step(&mut client, ID, b"hi", reply_of(answer), now),
        Err(SecureFailure::WrongKey(KeySource::Flag))
    ));

    let server_identity = identity();
    let server_key = server_identity.public_key();
    let mut server = ServerSecurity::new(server_identity, Some(AllowList::default()));
    let mut client = ClientSecurity::new(identity(), server_key);
    let hello = client.opening(ID, b"hi", now).unwrap();
    let answer = server.open(b"host", &[hello], Some(ID), now);
    assert_eq!(refusal(&answer), Refusal::NotAllowed);
    let (reply, notice) = answer_of(&answer);
    let key = client.public_key().to_string();
    assert!(notice.contains(&key), "the operator is told: {notice}");
    assert!(
        !reply
            .windows(key.len())
            .any(|window| window == key.as_bytes()),
        "the refusal, in clear, does not name the key"
    );
}

/// Issue 24, point 3: with a remembered key, a refusal "made for another
/// key" is no evidence by itself: the client asks the server which key it
/// holds, and only a different one is a changed key.
#[test]
fn a_remembered_key_is_called_changed_only_when_the_server_presents_another() {
    let impostor = identity();
    let impostor_key = impostor.public_key();
    let mut server = ServerSecurity::new(impostor, None);
    let remembered = identity().public_key();
    let now = Instant::now();
    let client = || ClientSecurity::new(identity(), remembered).remembered_in("line 2".into());

    let mut fooled = client();
    let hello = fooled.opening(ID, b"hi", now).unwrap();
    let refused = reply_of(server.open(b"host", &[hello], Some(ID), now));
    let Ok(ClientStep::Send(ask)) = step(&mut fooled, ID, b"hi", refused.clone(), now) else {
        panic!("the client asks which key the server holds");
    };
    let told = reply_of(server.open(b"host", &[ask], Some(ID), now));
    let Err(failure) = step(&mut fooled, ID, b"hi", told, now) else {
        panic!("another key is a changed key");
    };
    assert_eq!(
        failure,
        SecureFailure::KeyChanged {
            place: "line 2".into(),
            presented: impostor_key
        }
    );
    let said = failure.to_string();
    assert!(
        said.contains("(line 2)") && said.contains(&impostor_key.fingerprint()),
        "{said}"
    );
    assert!(!said.contains("Nothing was sent"), "{said}");

    // The refusal forged, the server telling the remembered key.
    let mut altered = client();
    altered.opening(ID, b"hi", now).unwrap();
    step(&mut altered, ID, b"hi", refused, now).unwrap();
    let genuine = Frame::Key { key: &remembered.0 }.encode();
    assert_eq!(
        step(&mut altered, ID, b"hi", genuine, now),
        Err(SecureFailure::HandshakeAltered)
    );
}

/// Issue 24, bug 3: inside a session, one injected clear refusal "made for
/// another server key" is ignored, with a remembered key as with a pinned one.
#[test]
fn inside_a_session_a_forged_wrong_key_refusal_raises_no_alarm() {
    let server_identity = identity();
    let key = server_identity.public_key();
    let mut server = ServerSecurity::new(server_identity, None);
    let mut client = ClientSecurity::new(identity(), key).remembered_in("line 1".into());
    let now = Instant::now();
    send(&mut client, &mut server, ID, b"hi", now);
    client.opening(message(2), b"two", now).unwrap();
    let forged = Frame::Refused {
        reason: Refusal::WrongKey,
        text: b"made for another server key",
    }
    .encode();
    assert_eq!(
        step(&mut client, message(2), b"two", forged, now),
        Ok(ClientStep::Ignore)
    );
}

#[test]
fn an_expired_session_asks_the_client_to_shake_hands_again() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    send(&mut client, &mut server, ID, b"hi", now);
    let next = message(2);
    let sealed = client.opening(next, b"later", now).unwrap();
    let later = now + REJECT_AFTER + Duration::from_secs(1);
    let answer = server.open(b"host", &[sealed], Some(next), later);
    assert_eq!(refusal(&answer), Refusal::UnknownSession);
    assert_eq!(server.session_count(), 0);
    assert!(matches!(
        step(&mut client, next, b"later", reply_of(answer), later),
        Ok(ClientStep::Send(_))
    ));
}

/// Issue 24, point 9: a message finds its session older than the rekey
/// time, or past the rekey count, and a new handshake goes first, unseen
/// by the user; the server refuses a message in a session past its hard
/// limit.
#[test]
fn sessions_are_rekeyed_after_a_time_and_a_count() {
    let (mut client, mut server) = pair();
    let start = Instant::now();
    let (first, _) = send(&mut client, &mut server, ID, b"hi", start);
    let first = opened_session(&first);
    let later = start + REKEY_AFTER;
    let body = client.opening(message(2), b"later", later).unwrap();
    assert!(
        matches!(Frame::parse(&body), Some(Frame::HandshakeInit { .. })),
        "a new handshake first"
    );
    let answer = reply_of(server.open(b"host", &[body], Some(message(2)), later));
    let Ok(ClientStep::Send(sealed)) = step(&mut client, message(2), b"later", answer, later)
    else {
        panic!("the rekey is not announced to the user");
    };
    let second = server.open(b"host", &[sealed], Some(message(2)), later);
    assert_ne!(opened_session(&second), first, "a new session");

    let mut sequence = 2;
    let mut rekeyed = false;
    for _ in 0..REKEY_AFTER_MESSAGES {
        sequence += 1;
        let body = client.opening(message(sequence), b"m", later).unwrap();
        if matches!(Frame::parse(&body), Some(Frame::HandshakeInit { .. })) {
            rekeyed = true;
            break;
        }
    }
    assert!(rekeyed, "rekeyed within {REKEY_AFTER_MESSAGES} messages");
}

#[test]
fn a_session_past_its_hard_limit_opens_no_message() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    send(&mut client, &mut server, ID, b"hi", now);
    // The client's clock says the session is young; the server's does not.
    let sealed = client.opening(message(2), b"two", now).unwrap();
    let answer = server.open(b"host", &[sealed], Some(message(2)), now + REJECT_AFTER * 2);
    assert_eq!(refusal(&answer), Refusal::UnknownSession);
}

#[test]
fn handshakes_with_an_ephemeral_key_of_small_order_are_refused_both_ways() {
    let server_identity = identity();
    let server_key = server_identity.public_key();
    let mut server = ServerSecurity::new(server_identity, None);
    let forged = [[0u8; KEY_LEN].as_slice(), &[7u8; 64]].concat();
    let mut hello = Frame::HandshakeInit {
        client_index: 9,
        noise: &forged,
    }
    .encode();
    Mac1Key::for_server(&server_key).append(&mut hello);
    let now = Instant::now();
    let answer = server.open(b"host", &[hello], Some(ID), now);
    assert_eq!(refusal(&answer), Refusal::HandshakeFailed);
    let (_, notice) = answer_of(&answer);
    assert!(notice.contains("small order"), "{notice}");
    assert_eq!(server.session_count(), 0);

    let mut client = ClientSecurity::new(identity(), server_key);
    let hello = client.opening(ID, b"hi", now).unwrap();
    let Some(Frame::HandshakeInit { client_index, .. }) = Frame::parse(&hello) else {
        panic!("the opening is a handshake");
    };
    let reply = Frame::HandshakeReply {
        client_index,
        server_index: 1,
        noise: &forged,
    }
    .encode();
    assert_eq!(
        step(&mut client, ID, b"hi", reply, now).err(),
        Some(SecureFailure::ServerNotProven(KeySource::Flag))
    );
}

#[test]
fn a_replayed_handshake_is_refused_and_evicts_no_session() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    let hello = client.opening(ID, b"hi", now).unwrap();
    let answer = server.open(b"host", std::slice::from_ref(&hello), Some(ID), now);
    let ClientStep::Proven(Some(sealed)) =
        step(&mut client, ID, b"hi", reply_of(answer), now).unwrap()
    else {
        panic!("the handshake completes");
    };
    opened_session(&server.open(b"host", &[sealed], Some(ID), now));
    // Before, each replay made a session (and past 4,096 evicted live
    // ones); now none does, so fifty show it. Each comes from a host of its
    // own, so the handshake budget does not refuse it first: the replay
    // check is what refuses every one.
    for replay in 0..50 {
        let host = format!("replayer {replay}");
        let answer = server.open(host.as_bytes(), std::slice::from_ref(&hello), Some(ID), now);
        let (_, notice) = answer_of(&answer);
        assert!(notice.contains("replayed handshake"), "{notice}");
        assert_eq!(refusal(&answer), Refusal::HandshakeFailed);
    }
    assert_eq!(server.session_count(), 1, "no session made by a replay");
    opened_session(&send(&mut client, &mut server, message(2), b"m", now).0);
}

/// Issue 24, point 6: a recorded handshake of a client off the allow list,
/// replayed, is refused as a replay: it learns nothing of the key.
#[test]
fn a_replayed_handshake_of_a_refused_key_learns_nothing() {
    let server_identity = identity();
    let server_key = server_identity.public_key();
    let mut server = ServerSecurity::new(server_identity, Some(AllowList::default()));
    let mut client = ClientSecurity::new(identity(), server_key);
    let now = Instant::now();
    let recorded = client.opening(ID, b"let me in", now).unwrap();
    let first = server.open(b"client", std::slice::from_ref(&recorded), Some(ID), now);
    assert_eq!(refusal(&first), Refusal::NotAllowed);
    let replayed = server.open(b"replayer", &[recorded], Some(ID), now);
    assert_eq!(refusal(&replayed), Refusal::HandshakeFailed);
    let (_, notice) = answer_of(&replayed);
    assert!(notice.contains("replayed"), "{notice}");
}

#[test]
fn a_new_session_replaces_an_old_one_only_once_confirmed() {
    let server_identity = identity();
    let server_key = server_identity.public_key();
    let mut server = ServerSecurity::new(server_identity, None);
    let now = Instant::now();
    let one = identity();
    let two = one.twin();
    let mut first = ClientSecurity::new(one, server_key);
    send(&mut first, &mut server, ID, b"hi", now);
    // A second handshake with the same key, never confirmed: the first
    // session keeps working.
    let mut second = ClientSecurity::new(two, server_key);
    let hello = second.opening(ID, b"hi", now).unwrap();
    let answer = reply_of(server.open(b"host", &[hello], Some(ID), now));
    opened_session(&send(&mut first, &mut server, message(2), b"m", now).0);
    // Confirmed, it joins the first (two confirmed sessions per key).
    let ClientStep::Proven(Some(sealed)) = step(&mut second, ID, b"hi", answer, now).unwrap()
    else {
        panic!("the handshake completes");
    };
    opened_session(&server.open(b"host", &[sealed], Some(ID), now));
    opened_session(&send(&mut first, &mut server, message(3), b"m", now).0);
    opened_session(&send(&mut second, &mut server, message(2), b"m", now).0);
    assert_eq!(server.session_count(), 2);
}

#[test]
fn a_handshake_older_than_the_newest_seen_is_refused() {
    let server_identity = identity();
    let server_key = server_identity.public_key();
    let mut server = ServerSecurity::new(server_identity, None);
    let now = Instant::now();
    let one = identity();
    let two = one.twin();
    let mut older = ClientSecurity::new(one, server_key);
    let recorded = older.opening(ID, b"hi", now).unwrap();
    let mut newer = ClientSecurity::new(two, server_key);
    send(&mut newer, &mut server, ID, b"hi", now);
    let answer = server.open(b"host", &[recorded], Some(ID), now);
    assert_eq!(refusal(&answer), Refusal::HandshakeFailed);
    assert_eq!(server.session_count(), 1);
}

/// Before a session, "no such session" (and "busy") restart the handshake
/// a few times for one message, then the refusal is reported.
#[test]
fn no_such_session_restarts_the_handshake_a_few_times_then_fails() {
    let mut client = ClientSecurity::new(identity(), identity().public_key());
    let now = Instant::now();
    client.opening(ID, b"hi", now).unwrap();
    let unknown = Frame::Refused {
        reason: Refusal::UnknownSession,
        text: b"no such session",
    }
    .encode();
    for _ in 0..RETRIES_PER_MESSAGE {
        assert!(matches!(
            step(&mut client, ID, b"hi", unknown.clone(), now),
            Ok(ClientStep::Send(_))
        ));
    }
    assert!(matches!(
        step(&mut client, ID, b"hi", unknown, now),
        Err(SecureFailure::Refused(Refusal::UnknownSession, _))
    ));
}

#[test]
fn a_plain_answer_to_a_handshake_is_reported_as_a_plain_server() {
    let mut client = ClientSecurity::new(identity(), identity().public_key());
    let now = Instant::now();
    let hello = client.opening(ID, b"hi", now).unwrap();
    assert_eq!(
        step(&mut client, ID, b"hi", b"sure".to_vec(), now).err(),
        Some(SecureFailure::ServerIsPlain(KeySource::Flag))
    );
    // A plain echo server sends the handshake itself back.
    assert_eq!(
        step(&mut client, ID, b"hi", hello, now).err(),
        Some(SecureFailure::ServerIsPlain(KeySource::Flag))
    );
}

/// docs/SECURITY.md and PROTOCOL.md: a sealed message frame is 52 bytes plus
/// the text, and 18 more per further 64 KiB chunk.
#[test]
fn a_sealed_message_frame_is_52_bytes_plus_the_text() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    send(&mut client, &mut server, ID, b"hi", now);
    for (length, chunks) in [(0, 1), (10, 1), (65_000, 1), (200_000, 4)] {
        let text = vec![b'x'; length];
        let frame = client.opening(message(2), &text, now).unwrap();
        assert_eq!(
            frame.len(),
            52 + length + 18 * (chunks - 1),
            "{length} bytes"
        );
    }
}

/// Issue 26, point 11: each failure names what the user actually did: a
/// key given with --server-key, remembered for the address, or learned.
#[test]
fn failures_name_where_the_key_came_from() {
    let flag = SecureFailure::ServerNotProven(KeySource::Flag).to_string();
    assert!(flag.contains("--server-key"), "{flag}");
    let remembered =
        SecureFailure::ServerNotProven(KeySource::Remembered("line 4 of F".into())).to_string();
    assert!(
        !remembered.contains("--server-key") && remembered.contains("line 4 of F"),
        "{remembered}"
    );
    let plain =
        SecureFailure::ServerIsPlain(KeySource::Remembered("line 4 of F".into())).to_string();
    assert!(
        plain.contains("not in secure mode") && plain.contains("delete that line"),
        "{plain}"
    );
    assert!(!plain.contains("--server-key"), "{plain}");
    let learned = SecureFailure::WrongKey(KeySource::Learned).to_string();
    assert!(!learned.contains("--server-key"), "{learned}");
}

/// Issue 24, point 8: a key learned on first use is written to the known
/// servers file only once a handshake proves the server holds it: a server
/// (or someone in the middle) that told one key and holds another gets
/// nothing remembered.
#[test]
fn a_learned_key_is_remembered_only_once_a_handshake_proves_it() {
    use crate::secure::known::KnownServers;
    let folder = crate::fixture::Scratch::new("learned");
    let path = folder.join("known_servers");
    let now = Instant::now();

    let told = identity().public_key();
    let mut server = ServerSecurity::new(identity(), None);
    let known = KnownServers::load(&path).unwrap();
    let mut fooled = ClientSecurity::new(identity(), told)
        .remember_when_proven(known, "tcp://127.0.0.1:1".into());
    let hello = fooled.opening(ID, b"hi", now).unwrap();
    let refused = reply_of(server.open(b"host", &[hello], Some(ID), now));
    assert_eq!(
        step(&mut fooled, ID, b"hi", refused, now),
        Err(SecureFailure::WrongKey(KeySource::Learned))
    );
    assert!(!path.exists(), "nothing remembered");

    let (mut client, mut server) = {
        let server = identity();
        let known = KnownServers::load(&path).unwrap();
        let client = ClientSecurity::new(identity(), server.public_key())
            .remember_when_proven(known, "tcp://127.0.0.1:1".into());
        (client, ServerSecurity::new(server, None))
    };
    let hello = client.opening(ID, b"hi", now).unwrap();
    let answer = reply_of(server.open(b"host", &[hello], Some(ID), now));
    assert!(!path.exists(), "not before the proof");
    assert!(matches!(
        step(&mut client, ID, b"hi", answer, now),
        Ok(ClientStep::Proven(Some(_)))
    ));
    let remembered = std::fs::read_to_string(&path).unwrap();
    assert!(remembered.starts_with("tcp://127.0.0.1:1 "), "{remembered}");
}

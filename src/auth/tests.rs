//! Unit tests of the handshake: wrong secret, tampered, reflected and
//! replayed MACs, frames out of order, secret validation.

use super::*;

fn secret(c: u8) -> Secret {
    Secret::from_bytes(&[c; 40]).expect("valid")
}

fn lb() -> Identity {
    Identity::new(0, "127.0.0.1:5060")
}

fn worker() -> Identity {
    Identity::new(3, "127.0.0.1:7003")
}

/// Runs a whole handshake between a dialer and an acceptor, with
/// `tamper` applied to each frame in flight.
fn run(
    ds: &Secret,
    as_: &Secret,
    tamper: impl Fn(Msg<'static>) -> Msg<'static>,
) -> Result<(Identity, Identity), AuthError> {
    let (d, hello) = Dialer::start(ds, worker(), Some(0))?;
    let mut a = Acceptor::new(as_, lb());
    let Step::Reply(challenge) = a.on_msg(&tamper(hello))? else {
        panic!("no challenge");
    };
    let (acceptor, proof) = d.on_challenge(&tamper(challenge))?;
    match a.on_msg(&tamper(proof))? {
        Step::Done(dialer) => Ok((dialer, acceptor)),
        Step::Reply(m) => panic!("unexpected reply {m:?}"),
    }
}

#[test]
fn same_secret_authenticates_both_sides() {
    let (dialer, acceptor) = run(&secret(1), &secret(1), |m| m).expect("ok");
    assert_eq!((dialer, acceptor), (worker(), lb()));
}

#[test]
fn wrong_secret_fails_at_the_dialer_and_at_the_acceptor() {
    // The dialer checks the acceptor's proof first.
    assert!(matches!(
        run(&secret(1), &secret(2), |m| m),
        Err(AuthError::BadProof)
    ));
    // An acceptor with another secret rejects a proof made with ours.
    let (d, hello) = Dialer::start(&secret(1), worker(), None).expect("start");
    let mut honest = Acceptor::new(&secret(1), lb());
    let Ok(Step::Reply(challenge)) = honest.on_msg(&hello) else {
        panic!("no challenge")
    };
    let (_, proof) = d.on_challenge(&challenge).expect("genuine challenge");
    let mut other = Acceptor::new(&secret(2), lb());
    let _ = other.on_msg(&hello).expect("challenge");
    assert!(matches!(other.on_msg(&proof), Err(AuthError::BadProof)));
}

#[test]
fn tampered_macs_nonces_and_identities_fail() {
    let flip_mac = |m: Msg<'static>| match m {
        Msg::AuthProof { mut mac } => {
            mac[31] ^= 1;
            Msg::AuthProof { mac }
        }
        other => other,
    };
    assert!(matches!(
        run(&secret(1), &secret(1), flip_mac),
        Err(AuthError::BadProof)
    ));
    let flip_challenge = |m: Msg<'static>| match m {
        Msg::AuthChallenge {
            nonce,
            id,
            addr,
            mut mac,
        } => {
            mac[0] ^= 0x80;
            Msg::AuthChallenge {
                nonce,
                id,
                addr,
                mac,
            }
        }
        other => other,
    };
    assert!(matches!(
        run(&secret(1), &secret(1), flip_challenge),
        Err(AuthError::BadProof)
    ));
    // A man in the middle rewriting who the dialer claims to be.
    let impersonate = |m: Msg<'static>| match m {
        Msg::AuthHello { nonce, addr, .. } => Msg::AuthHello { nonce, id: 9, addr },
        other => other,
    };
    assert!(matches!(
        run(&secret(1), &secret(1), impersonate),
        Err(AuthError::BadProof)
    ));
    let other_nonce = |m: Msg<'static>| match m {
        Msg::AuthChallenge { id, addr, mac, .. } => Msg::AuthChallenge {
            nonce: [0; NONCE_LEN],
            id,
            addr,
            mac,
        },
        other => other,
    };
    assert!(matches!(
        run(&secret(1), &secret(1), other_nonce),
        Err(AuthError::BadProof)
    ));
}

#[test]
fn a_reflected_mac_does_not_pass() {
    // The attacker dials the acceptor, gets its challenge, and sends the
    // acceptor's own MAC back as the dialer's proof.
    let s = secret(1);
    let mut a = Acceptor::new(&s, lb());
    let hello = Msg::AuthHello {
        nonce: [5; NONCE_LEN],
        id: 3,
        addr: "127.0.0.1:7003".into(),
    };
    let Ok(Step::Reply(Msg::AuthChallenge { mac, .. })) = a.on_msg(&hello) else {
        panic!("no challenge")
    };
    assert!(matches!(
        a.on_msg(&Msg::AuthProof { mac }),
        Err(AuthError::BadProof)
    ));
    // Nor can the acceptor's proof be replayed on a new connection.
    let mut b = Acceptor::new(&s, lb());
    let _ = b.on_msg(&hello).expect("challenge");
    assert!(matches!(
        b.on_msg(&Msg::AuthProof { mac }),
        Err(AuthError::BadProof)
    ));
}

#[test]
fn other_frames_before_the_proof_are_refused() {
    let s = secret(1);
    for first in [
        Msg::DumpRequest,
        Msg::MembersRequest,
        Msg::AuthProof { mac: [0; MAC_LEN] },
    ] {
        let mut a = Acceptor::new(&s, lb());
        assert!(matches!(a.on_msg(&first), Err(AuthError::Unexpected(_))));
    }
    let mut a = Acceptor::new(&s, lb());
    let (_, hello) = Dialer::start(&s, worker(), None).expect("start");
    let _ = a.on_msg(&hello).expect("challenge");
    let record = Msg::Record(crate::msg::RecordRef {
        origin: 1,
        seq: 1,
        version: 1,
        id: 1,
        content: &[0; 100_000],
    });
    match a.on_msg(&record) {
        Err(AuthError::Unexpected(d)) => assert!(d.len() < 120, "{d}"),
        other => panic!("{other:?}"),
    }
    // A dialer accepts nothing but the challenge.
    let (d, _) = Dialer::start(&s, worker(), None).expect("start");
    assert!(matches!(
        d.on_challenge(&Msg::Heartbeat),
        Err(AuthError::Unexpected(_))
    ));
}

#[test]
fn dialer_checks_whom_it_reached() {
    let s = secret(1);
    let (d, hello) = Dialer::start(&s, worker(), Some(4)).expect("start");
    let mut a = Acceptor::new(&s, Identity::new(5, "127.0.0.1:7005"));
    let Ok(Step::Reply(c)) = a.on_msg(&hello) else {
        panic!("no challenge")
    };
    assert!(matches!(
        d.on_challenge(&c),
        Err(AuthError::WrongPeer {
            expected: 4,
            got: 5
        })
    ));
}

#[test]
fn secrets_are_trimmed_and_checked() {
    assert!(Secret::from_bytes(b"short").is_err());
    assert!(Secret::from_bytes(&[b'x'; 31]).is_err());
    assert!(Secret::from_bytes(&[b'x'; MAX_SECRET_LEN + 1]).is_err());
    let mut padded = b"  \n".to_vec();
    padded.extend_from_slice(&[b'k'; 32]);
    padded.extend_from_slice(b"\n\r\t ");
    let s = Secret::from_bytes(&padded).expect("32 bytes after trimming");
    assert_eq!(s.as_bytes(), &[b'k'; 32]);
    assert_eq!(format!("{s:?}"), "Secret(32 bytes)");
    let k = keygen().expect("keygen");
    assert_eq!(k.len(), 64);
    assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(k, keygen().expect("keygen"));
    assert!(Secret::from_bytes(k.as_bytes()).is_ok());
}

#[test]
fn blocking_dial_against_an_acceptor() {
    // A canned acceptor: the stream holds its challenge to our hello.
    struct Pipe {
        acceptor: Acceptor,
        to_dialer: Vec<u8>,
        from_dialer: Vec<u8>,
    }
    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.from_dialer.extend_from_slice(b);
            while let Ok(Some((m, n))) = msg::decode(&self.from_dialer, 0) {
                if let Ok(Step::Reply(r)) = self.acceptor.on_msg(&m) {
                    msg::encode(&mut self.to_dialer, &r);
                    msg::encode(&mut self.to_dialer, &Msg::Heartbeat);
                }
                self.from_dialer.drain(..n);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Read for Pipe {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = b.len().min(self.to_dialer.len()).min(7);
            b[..n].copy_from_slice(&self.to_dialer[..n]);
            self.to_dialer.drain(..n);
            Ok(n)
        }
    }
    let s = secret(1);
    let mut p = Pipe {
        acceptor: Acceptor::new(&s, lb()),
        to_dialer: Vec::new(),
        from_dialer: Vec::new(),
    };
    let mut buf = Vec::new();
    let who = dial_blocking(&mut p, &s, worker(), Some(0), &mut buf).expect("dial");
    assert_eq!(who, lb());
    // The frame after the challenge is left for the caller.
    buf.extend_from_slice(&p.to_dialer);
    assert!(matches!(
        msg::decode(&buf, 0),
        Ok(Some((Msg::Heartbeat, _)))
    ));
    // With another secret the same exchange fails, and clearly.
    let mut p = Pipe {
        acceptor: Acceptor::new(&secret(2), lb()),
        to_dialer: Vec::new(),
        from_dialer: Vec::new(),
    };
    let e = dial_blocking(&mut p, &s, worker(), Some(0), &mut Vec::new()).unwrap_err();
    assert!(
        e.to_string().contains("does not hold our cluster secret"),
        "{e}"
    );
}

//! The fault kinds `--faults` selects, their parsing, and the deck the
//! nemesis draws them from.

use crate::rng::Rng;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Kill,
    Stop,
    Add,
    Lb,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Kill, Kind::Stop, Kind::Add, Kind::Lb];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::Add => "add",
            Kind::Lb => "lb",
        }
    }

    /// `kill,stop,add,lb` (any subset, any order), or `none`.
    pub fn parse_list(s: &str) -> Result<Vec<Kind>, String> {
        let mut out = Vec::new();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "none" {
                continue;
            }
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == word)
                .ok_or_else(|| {
                    format!("unknown fault kind {word:?} (kinds: kill, stop, add, lb, none)")
                })?;
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        Ok(out)
    }
}

/// The selected kinds, dealt in shuffled rounds so that every kind comes up
/// once per round even in a short run.
pub struct Deck {
    kinds: Vec<Kind>,
    left: Vec<Kind>,
}

impl Deck {
    pub fn new(kinds: Vec<Kind>) -> Deck {
        Deck {
            kinds,
            left: Vec::new(),
        }
    }

    /// The first kind left in this round that is `possible` now; `None`
    /// if there is none (no fault this time: a fallback would favour
    /// whatever is always possible, the LB). Kinds that can never happen
    /// again (`add` at `--max-workers`) leave the deck.
    pub fn draw(&mut self, rng: &mut Rng, possible: &[Kind], add_exhausted: bool) -> Option<Kind> {
        let dead = |k: &Kind| add_exhausted && *k == Kind::Add;
        self.left.retain(|k| !dead(k));
        if self.left.is_empty() {
            self.left = self.kinds.iter().copied().filter(|k| !dead(k)).collect();
            for i in (1..self.left.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.left.swap(i, j);
            }
        }
        let i = self.left.iter().position(|k| possible.contains(k))?;
        Some(self.left.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!(
            Kind::parse_list("kill,stop,add,lb").unwrap(),
            Kind::ALL.to_vec()
        );
        assert_eq!(
            Kind::parse_list(" lb , kill,lb").unwrap(),
            vec![Kind::Lb, Kind::Kill]
        );
        assert!(Kind::parse_list("none").unwrap().is_empty());
        assert!(Kind::parse_list("").unwrap().is_empty());
        assert!(Kind::parse_list("kill,boom").is_err());
    }

    #[test]
    fn deck_deals_every_kind_once_per_round() {
        let mut rng = Rng::new(3);
        let mut deck = Deck::new(Kind::ALL.to_vec());
        let mut round: Vec<Kind> = (0..4)
            .filter_map(|_| deck.draw(&mut rng, &Kind::ALL, false))
            .collect();
        round.sort();
        assert_eq!(round, Kind::ALL.to_vec());
        // Only `lb` possible: drawn if still in the round, else nothing.
        let mut deck = Deck::new(Kind::ALL.to_vec());
        let got: Vec<Option<Kind>> = (0..4)
            .map(|_| deck.draw(&mut rng, &[Kind::Lb], false))
            .collect();
        assert_eq!(got.iter().flatten().count(), 1);
        // `add` exhausted: never drawn again.
        let mut deck = Deck::new(vec![Kind::Add, Kind::Kill]);
        for _ in 0..6 {
            assert_ne!(deck.draw(&mut rng, &Kind::ALL, true), Some(Kind::Add));
        }
    }
}

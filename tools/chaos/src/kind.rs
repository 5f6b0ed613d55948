//! The fault kinds `--faults` selects, and their parsing.

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
}

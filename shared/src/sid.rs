//! Semantic IDs: code tokens such as `<a_42>`, whole SIDs such as `<a_42><b_17><c_203>`, and the
//! item → SID index.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Identifier of a catalogue item (MiniOneRec numbers items 0..N-1).
pub type ItemId = u32;

/// Highest number of SID levels; level `l` is written with the letter `a + l`.
pub const MAX_LEVELS: usize = 26;

/// One code token: the code chosen at one level of the quantizer, written `<{letter}_{code}>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SidToken {
    /// 0-based level (`a` = 0).
    pub level: u8,
    /// Code within the level's codebook.
    pub code: u32,
}

impl SidToken {
    /// A token for `level` (must be < [`MAX_LEVELS`]) and `code`.
    pub fn new(level: usize, code: u32) -> Self {
        assert!(level < MAX_LEVELS, "SID level {level} out of range");
        Self {
            level: level as u8,
            code,
        }
    }

    /// The level's letter prefix (`a`, `b`, ...).
    pub fn letter(self) -> char {
        (b'a' + self.level) as char
    }
}

impl fmt::Display for SidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}_{}>", self.letter(), self.code)
    }
}

impl FromStr for SidToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Sid(format!("`{s}` is not a SID token like `<a_12>`"));
        let inner = s
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .ok_or_else(bad)?;
        let (letter, code) = inner.split_once('_').ok_or_else(bad)?;
        let mut chars = letter.chars();
        let (Some(l), None) = (chars.next(), chars.next()) else {
            return Err(bad());
        };
        if !l.is_ascii_lowercase() {
            return Err(bad());
        }
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let code: u32 = code.parse().map_err(|_| bad())?;
        Ok(SidToken {
            level: l as u8 - b'a',
            code,
        })
    }
}

/// A whole Semantic ID: one token per level, level `i` at position `i`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sid(Vec<u32>);

impl Sid {
    /// A SID from its per-level codes.
    pub fn from_codes(codes: Vec<u32>) -> Self {
        assert!(codes.len() <= MAX_LEVELS, "too many SID levels");
        Sid(codes)
    }

    /// Build from tokens, checking that token `i` belongs to level `i`.
    pub fn from_tokens<S: AsRef<str>>(tokens: &[S]) -> Result<Self> {
        if tokens.is_empty() {
            return Err(Error::Sid("a SID needs at least one token".into()));
        }
        if tokens.len() > MAX_LEVELS {
            return Err(Error::Sid(format!("a SID has at most {MAX_LEVELS} tokens")));
        }
        let mut codes = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let tok: SidToken = t.as_ref().parse()?;
            if tok.level as usize != i {
                return Err(Error::Sid(format!(
                    "token `{}` at position {i} should use the level letter `{}`",
                    t.as_ref(),
                    (b'a' + i as u8) as char
                )));
            }
            codes.push(tok.code);
        }
        Ok(Sid(codes))
    }

    /// Per-level codes.
    pub fn codes(&self) -> &[u32] {
        &self.0
    }

    /// Number of levels (tokens).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty SID (never produced by the parsers).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tokens, level by level.
    pub fn tokens(&self) -> impl Iterator<Item = SidToken> + '_ {
        self.0.iter().enumerate().map(|(l, &c)| SidToken::new(l, c))
    }

    /// Token strings, as stored in `.index.json`.
    pub fn token_strings(&self) -> Vec<String> {
        self.tokens().map(|t| t.to_string()).collect()
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in self.tokens() {
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl FromStr for Sid {
    type Err = Error;

    /// Parse the concatenated form `<a_1><b_2><c_3>` (surrounding whitespace ignored).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Error::Sid("empty SID string".into()));
        }
        let mut parts = Vec::new();
        let mut rest = t;
        while !rest.is_empty() {
            let end = rest
                .find('>')
                .ok_or_else(|| Error::Sid(format!("`{s}` is not a SID like `<a_1><b_2><c_3>`")))?;
            parts.push(&rest[..=end]);
            rest = &rest[end + 1..];
        }
        Sid::from_tokens(&parts)
    }
}

/// The item → SID map of a catalogue (MiniOneRec's `.index.json`), ordered by item id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidIndex {
    entries: BTreeMap<ItemId, Sid>,
}

impl SidIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the SID of `item`, returning the previous one.
    pub fn insert(&mut self, item: ItemId, sid: Sid) -> Option<Sid> {
        self.entries.insert(item, sid)
    }

    /// SID of an item.
    pub fn get(&self, item: ItemId) -> Option<&Sid> {
        self.entries.get(&item)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no item is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Items and their SIDs in item-id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (ItemId, &Sid)> + '_ {
        self.entries.iter().map(|(&k, v)| (k, v))
    }

    /// The largest number of levels of any SID.
    pub fn max_levels(&self) -> usize {
        self.entries.values().map(Sid::len).max().unwrap_or(0)
    }

    /// Per level, the number of codes needed (max code + 1).
    pub fn codebook_sizes(&self) -> Vec<u32> {
        let mut sizes = vec![0u32; self.max_levels()];
        for sid in self.entries.values() {
            for (l, &c) in sid.codes().iter().enumerate() {
                sizes[l] = sizes[l].max(c + 1);
            }
        }
        sizes
    }

    /// Every distinct token, sorted as the reference's TokenExtender sorts them (Python string order).
    pub fn sorted_token_strings(&self) -> Vec<String> {
        let mut set = std::collections::BTreeSet::new();
        for sid in self.entries.values() {
            for t in sid.tokens() {
                set.insert(t.to_string());
            }
        }
        set.into_iter().collect()
    }
}

impl FromIterator<(ItemId, Sid)> for SidIndex {
    fn from_iter<T: IntoIterator<Item = (ItemId, Sid)>>(iter: T) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        let t: SidToken = "<c_203>".parse().unwrap();
        assert_eq!(t, SidToken::new(2, 203));
        assert_eq!(t.to_string(), "<c_203>");
        for bad in [
            "c_1", "<c1>", "<C_1>", "<cc_1>", "<c_>", "<c_-1>", "<c_1x>", "<_1>",
        ] {
            assert!(bad.parse::<SidToken>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn sid_round_trip_and_level_check() {
        let s: Sid = " <a_42><b_17><c_203>\n".parse().unwrap();
        assert_eq!(s.codes(), &[42, 17, 203]);
        assert_eq!(s.to_string(), "<a_42><b_17><c_203>");
        assert!("<a_1><c_2>".parse::<Sid>().is_err());
        assert!("<a_1><b_2".parse::<Sid>().is_err());
        assert!("".parse::<Sid>().is_err());
    }

    #[test]
    fn sorted_tokens_follow_python_string_order() {
        let idx: SidIndex = [
            (0, Sid::from_codes(vec![1, 2])),
            (1, Sid::from_codes(vec![10, 2])),
            (2, Sid::from_codes(vec![100, 3])),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            idx.sorted_token_strings(),
            // Python's sorted() compares code points: '0' (48) sorts before '>' (62).
            ["<a_100>", "<a_10>", "<a_1>", "<b_2>", "<b_3>"]
        );
        assert_eq!(idx.codebook_sizes(), vec![101, 4]);
    }
}

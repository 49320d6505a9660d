//! Optional prompt tokens after GPR's unified input schema: a user-segment token (U), a
//! request-context token (E) and an item-type token before every history SID (I/O).
//!
//! A checkpoint records which groups it was trained with ([`PromptTokens`], in `sidrec.json`);
//! its tokenizer holds their tokens as single special tokens. Prompts then read
//! `{U} {E} <the template's text, each history SID written {P}{SID}>`, where only the groups the
//! checkpoint has appear. The response stays the bare SID, so constrained decoding is unchanged.
//! A checkpoint without groups builds exactly the prompts it always did.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::data::Items;
use crate::error::{Error, Result};
use crate::sid::SidIndex;

/// One group of optional prompt tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenGroup {
    /// A user-segment token before the history (U).
    User,
    /// A request-context token before the history (E).
    Context,
    /// An item-type token before every history SID (I/O).
    ItemType,
}

impl TokenGroup {
    /// Every group, in prompt order.
    pub const ALL: [TokenGroup; 3] = [TokenGroup::User, TokenGroup::Context, TokenGroup::ItemType];

    /// The group's name as flags and `sidrec.json` spell it.
    pub fn name(self) -> &'static str {
        match self {
            TokenGroup::User => "user",
            TokenGroup::Context => "context",
            TokenGroup::ItemType => "item-type",
        }
    }

    /// The group's tokens, in the order they are added to a tokenizer.
    pub fn tokens(self) -> &'static [&'static str] {
        const USER: [&str; 4] = [
            UserSegment::High.token(),
            UserSegment::Mid.token(),
            UserSegment::Low.token(),
            UserSegment::Unknown.token(),
        ];
        const CONTEXT: [&str; 3] = [
            RequestContext::Browse.token(),
            RequestContext::Search.token(),
            RequestContext::Homepage.token(),
        ];
        const ITEM_TYPE: [&str; 2] = [ItemType::Organic.token(), ItemType::Premium.token()];
        match self {
            TokenGroup::User => &USER,
            TokenGroup::Context => &CONTEXT,
            TokenGroup::ItemType => &ITEM_TYPE,
        }
    }
}

impl fmt::Display for TokenGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The token groups a checkpoint's prompts carry (none for checkpoints without the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "Vec<TokenGroup>", into = "Vec<TokenGroup>")]
pub struct PromptTokens {
    user: bool,
    context: bool,
    item_type: bool,
}

impl From<Vec<TokenGroup>> for PromptTokens {
    fn from(groups: Vec<TokenGroup>) -> Self {
        Self::new(&groups)
    }
}

impl From<PromptTokens> for Vec<TokenGroup> {
    fn from(t: PromptTokens) -> Self {
        t.groups()
    }
}

impl PromptTokens {
    /// The set of `groups` (repeats are harmless).
    pub fn new(groups: &[TokenGroup]) -> Self {
        Self {
            user: groups.contains(&TokenGroup::User),
            context: groups.contains(&TokenGroup::Context),
            item_type: groups.contains(&TokenGroup::ItemType),
        }
    }

    /// No groups: the plain prompts.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no group is on.
    pub fn is_empty(&self) -> bool {
        self.groups().is_empty()
    }

    /// True when `group` is on.
    pub fn has(&self, group: TokenGroup) -> bool {
        match group {
            TokenGroup::User => self.user,
            TokenGroup::Context => self.context,
            TokenGroup::ItemType => self.item_type,
        }
    }

    /// The groups that are on, in prompt order.
    pub fn groups(&self) -> Vec<TokenGroup> {
        TokenGroup::ALL
            .into_iter()
            .filter(|&g| self.has(g))
            .collect()
    }

    /// Every token of the groups that are on (what the tokenizer must hold).
    pub fn token_strings(&self) -> Vec<&'static str> {
        self.groups()
            .into_iter()
            .flat_map(|g| g.tokens().iter().copied())
            .collect()
    }

    /// The text before a history: `"{U} {E} "` for the groups that are on, else empty.
    pub fn lead(&self, ctx: &PromptContext) -> String {
        let mut out = String::new();
        if self.user {
            out.push_str(ctx.user.token());
            out.push(' ');
        }
        if self.context {
            out.push_str(ctx.context.token());
            out.push(' ');
        }
        out
    }
}

impl fmt::Display for PromptTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.groups().into_iter().map(TokenGroup::name).collect();
        f.write_str(&names.join(","))
    }
}

/// Generates a closed enum with its wire names (API and files) and prompt tokens.
macro_rules! token_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $v:ident = $wire:literal => $tok:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $wire)] $v),+
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The name as the API and files spell it.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $wire),+ }
            }

            /// Its prompt token.
            pub const fn token(self) -> &'static str {
                match self { $($name::$v => $tok),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.name()).collect();
                    Error::Invalid(format!(
                        "unknown {} `{s}` (expected one of: {})",
                        $what,
                        names.join(", ")
                    ))
                })
            }
        }
    };
}

token_enum!(
    /// A user's segment (U): by mean rating where the data has ratings, else by train activity.
    UserSegment, "user segment", {
        /// Mean rating above 4.5, or the most active third of users.
        High = "high" => "[USER_HIGH]",
        /// Mean rating above 3.5, or the middle third.
        Mid = "mid" => "[USER_MID]",
        /// Lower mean rating, or the least active third.
        Low = "low" => "[USER_LOW]",
        /// Not known (a new user, or a request that does not say); the default.
        #[default]
        Unknown = "unknown" => "[USER_UNKNOWN]",
    }
);

token_enum!(
    /// Where a request comes from (E).
    RequestContext, "context", {
        /// Browsing.
        Browse = "browse" => "[CTX_BROWSE]",
        /// A search page.
        Search = "search" => "[CTX_SEARCH]",
        /// The home page (the default, and every training row of a dataset without contexts).
        #[default]
        Homepage = "homepage" => "[CTX_HOMEPAGE]",
    }
);

token_enum!(
    /// An item's type (I/O): GPR's ad items (I) and organic content (O), here high-value or
    /// popular items (I) and the rest (O).
    ItemType, "item type", {
        /// The rest, and any item without a recorded type.
        #[default]
        Organic = "O" => "[O_TOKEN]",
        /// High-value or popular items.
        Premium = "I" => "[I_TOKEN]",
    }
);

/// The per-prompt values of the U and E groups (unused groups are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PromptContext {
    /// The user's segment.
    pub user: UserSegment,
    /// The request's context.
    pub context: RequestContext,
}

/// Field of an item's metadata (`items.json`) that holds its type.
pub const ITEM_TYPE_FIELD: &str = "item_type";

/// Item types by SID string, read from a checkpoint's item table, so that histories given as
/// item ids and as SIDs get the same tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemTypes {
    by_sid: HashMap<String, ItemType>,
}

impl ItemTypes {
    /// The types recorded in `items` (field [`ITEM_TYPE_FIELD`], `"I"` or `"O"`) for the items
    /// of `index`. A SID shared by several items takes the type of the lowest id; an item
    /// without the field is `O`. A value other than `"I"`/`"O"` is an error naming the item.
    pub fn from_items(items: &Items, index: &SidIndex) -> Result<Self> {
        let mut by_sid = HashMap::with_capacity(index.len());
        let mut ids: Vec<_> = index.iter().collect();
        ids.sort_by_key(|(id, _)| *id);
        for (id, sid) in ids {
            let t = match items.get(&id).and_then(|m| m.extra.get(ITEM_TYPE_FIELD)) {
                None => ItemType::Organic,
                Some(v) => v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    Error::Invalid(format!(
                        "item {id}: {ITEM_TYPE_FIELD} is {v}; expected \"I\" or \"O\""
                    ))
                })?,
            };
            by_sid.entry(sid.to_string()).or_insert(t);
        }
        Ok(Self { by_sid })
    }

    /// Types given per item id (tests, and `init` before it writes the item table).
    pub fn from_map(types: &BTreeMap<crate::ItemId, ItemType>, index: &SidIndex) -> Self {
        let mut by_sid = HashMap::with_capacity(types.len());
        for (&id, &t) in types {
            if let Some(sid) = index.get(id) {
                by_sid.entry(sid.to_string()).or_insert(t);
            }
        }
        Self { by_sid }
    }

    /// The type of the item(s) with SID `sid` (`O` when unknown).
    pub fn get(&self, sid: &str) -> ItemType {
        self.by_sid.get(sid).copied().unwrap_or(ItemType::Organic)
    }

    /// Items of type `I`.
    pub fn count_items(&self) -> usize {
        self.by_sid
            .values()
            .filter(|&&t| t == ItemType::Premium)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ItemMeta;

    #[test]
    fn groups_serialise_as_a_list_and_absent_means_none() {
        let t = PromptTokens::new(&[TokenGroup::ItemType, TokenGroup::User]);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"["user","item-type"]"#
        );
        let back: PromptTokens = serde_json::from_str(r#"["item-type","user"]"#).unwrap();
        assert_eq!(back, t);
        assert_eq!(t.to_string(), "user,item-type");
        assert_eq!(
            t.token_strings(),
            [
                "[USER_HIGH]",
                "[USER_MID]",
                "[USER_LOW]",
                "[USER_UNKNOWN]",
                "[O_TOKEN]",
                "[I_TOKEN]"
            ]
        );
        assert!(PromptTokens::none().is_empty());
        assert!(serde_json::from_str::<PromptTokens>(r#"["colour"]"#).is_err());
    }

    #[test]
    fn lead_has_only_the_groups_that_are_on() {
        let ctx = PromptContext {
            user: UserSegment::High,
            context: RequestContext::Search,
        };
        assert_eq!(PromptTokens::none().lead(&ctx), "");
        assert_eq!(
            PromptTokens::new(&[TokenGroup::User]).lead(&ctx),
            "[USER_HIGH] "
        );
        assert_eq!(
            PromptTokens::new(&TokenGroup::ALL).lead(&ctx),
            "[USER_HIGH] [CTX_SEARCH] "
        );
        assert_eq!(
            PromptTokens::new(&[TokenGroup::Context]).lead(&PromptContext::default()),
            "[CTX_HOMEPAGE] "
        );
    }

    #[test]
    fn closed_enums_parse_their_wire_names_only() {
        assert_eq!("mid".parse::<UserSegment>().unwrap(), UserSegment::Mid);
        assert_eq!(
            "homepage".parse::<RequestContext>().unwrap(),
            RequestContext::Homepage
        );
        let e = "vip".parse::<UserSegment>().unwrap_err().to_string();
        assert!(e.contains("high, mid, low, unknown"), "{e}");
        assert!("I".parse::<ItemType>().is_ok() && "i".parse::<ItemType>().is_err());
    }

    #[test]
    fn item_types_come_from_the_item_table_by_sid() {
        let mut index = SidIndex::new();
        index.insert(1, "<a_1><b_1>".parse().unwrap());
        index.insert(2, "<a_2><b_2>".parse().unwrap());
        index.insert(3, "<a_3><b_3>".parse().unwrap());
        let mut items = Items::new();
        let mut m = ItemMeta::new("x", "");
        m.extra.insert(ITEM_TYPE_FIELD.into(), "I".into());
        items.insert(1, m);
        let mut m = ItemMeta::new("y", "");
        m.extra.insert(ITEM_TYPE_FIELD.into(), "O".into());
        items.insert(2, m);
        items.insert(3, ItemMeta::new("z", ""));
        let t = ItemTypes::from_items(&items, &index).unwrap();
        assert_eq!(t.get("<a_1><b_1>"), ItemType::Premium);
        assert_eq!(t.get("<a_2><b_2>"), ItemType::Organic);
        assert_eq!(t.get("<a_3><b_3>"), ItemType::Organic);
        assert_eq!(t.get("<a_9><b_9>"), ItemType::Organic);
        assert_eq!(t.count_items(), 1);
        items
            .get_mut(&3)
            .unwrap()
            .extra
            .insert(ITEM_TYPE_FIELD.into(), "ad".into());
        let e = ItemTypes::from_items(&items, &index)
            .unwrap_err()
            .to_string();
        assert!(e.contains("item 3") && e.contains("\"ad\""), "{e}");
    }
}

//! Prompt templates of SFT, evaluation and RL (`rl_*`): the reference's strings verbatim
//! (`minionerec`) and short ones (`compact`).
//!
//! [`PromptEncoder`] is the one path from a history of items to prompt token ids.
//!
//! A prompt is a list of parts that are tokenised SEPARATELY and concatenated, because that is
//! what the reference does for SFT and evaluation (HEADER and USER are encoded apart, so BPE
//! merges never cross the join); RL prompts are a single part. The response is the text the
//! model must write, without the EOS token.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod encoder;
mod tokens;
pub use encoder::{history_sids, item_sid, EncodedPrompt, PromptEncoder};
pub use tokens::{
    ItemType, ItemTypes, PromptContext, PromptTokens, RequestContext, TokenGroup, UserSegment,
    ITEM_TYPE_FIELD,
};

/// Which family of templates a checkpoint was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    /// The reference's exact strings, for checkpoints that must behave like MiniOneRec.
    #[default]
    Minionerec,
    /// Short prompts for small from-scratch models: fewer tokens, same information.
    Compact,
}

impl fmt::Display for PromptStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PromptStyle::Minionerec => "minionerec",
            PromptStyle::Compact => "compact",
        })
    }
}

impl FromStr for PromptStyle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "minionerec" => Ok(PromptStyle::Minionerec),
            "compact" => Ok(PromptStyle::Compact),
            _ => Err(Error::Invalid(format!(
                "unknown prompt style `{s}` (expected minionerec or compact)"
            ))),
        }
    }
}

/// A prompt as separately-tokenised parts plus the expected response (without EOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Text parts, each tokenised on its own, in order.
    pub parts: Vec<String>,
    /// The response the model is trained to write (empty for inference-only prompts).
    pub response: String,
}

impl Prompt {
    /// The whole prompt text (the parts joined), e.g. for logging or RL keys.
    pub fn text(&self) -> String {
        self.parts.concat()
    }
}

/// The reference's instruction preamble (`HEADER` in MINIONEREC.md §2).
pub fn minionerec_header(instruction: &str) -> String {
    format!(
        "Below is an instruction that describes a task, paired with an input that provides \
         further context. Write a response that appropriately completes the request. \n\n\
         ### Instruction:\n{instruction}\n\n"
    )
}

/// The reference's user block (`USER`): note the space after `Input:`.
pub fn minionerec_user(input: &str) -> String {
    format!("### User Input: \n{input}\n\n### Response:\n")
}

/// The tail every reference prompt ends with; its tokens are the constrained decoder's root key.
pub const MINIONEREC_RESPONSE_TAIL: &str = "### Response:\n";

const SEQREC_INSTRUCTION: &str = "Can you predict the next possible item that the user may expect?";

/// `items` joined by `sep`.
fn join<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    items
        .iter()
        .map(|s| s.as_ref())
        .collect::<Vec<_>>()
        .join(sep)
}

/// `H`: SIDs joined with comma + space.
fn join_sids<S: AsRef<str>>(sids: &[S]) -> String {
    join(sids, ", ")
}

/// `T2`: double-quoted titles joined with comma + space.
fn join_titles<S: AsRef<str>>(titles: &[S]) -> String {
    titles
        .iter()
        .map(|t| format!("\"{}\"", t.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The evaluation prompt (SID history → next SID), as the reference's `EvalSidDataset` builds it.
///
/// `minionerec`: its test-time phrasing, which differs from the SFT phrasing (MINIONEREC.md §9.1).
pub fn eval_seqrec<S: AsRef<str>>(style: PromptStyle, history_sids: &[S]) -> Prompt {
    eval_seqrec_led(style, "", history_sids)
}

/// [`eval_seqrec`] with `lead` (the U/E prompt tokens, see [`PromptTokens::lead`]) written
/// before the history's sentence.
pub fn eval_seqrec_led<S: AsRef<str>>(
    style: PromptStyle,
    lead: &str,
    history_sids: &[S],
) -> Prompt {
    match style {
        PromptStyle::Minionerec => Prompt {
            parts: vec![
                minionerec_header(SEQREC_INSTRUCTION),
                minionerec_user(&format!(
                    "{lead}Can you predict the next possible item the user may expect, given the \
                     following chronological interaction history: {}",
                    join_sids(history_sids)
                )),
            ],
            response: String::new(),
        },
        PromptStyle::Compact => compact_seqrec(lead, history_sids, String::new()),
    }
}

/// The SFT prompt for SID history → next SID (`SidSFTDataset`); `target_sid` without newline.
pub fn sft_seqrec<S: AsRef<str>>(
    style: PromptStyle,
    history_sids: &[S],
    target_sid: &str,
) -> Prompt {
    sft_seqrec_led(style, "", history_sids, target_sid)
}

/// [`sft_seqrec`] with `lead` (the U/E prompt tokens) before the history's sentence; the
/// response stays the bare SID.
pub fn sft_seqrec_led<S: AsRef<str>>(
    style: PromptStyle,
    lead: &str,
    history_sids: &[S],
    target_sid: &str,
) -> Prompt {
    let response = format!("{target_sid}\n");
    match style {
        PromptStyle::Minionerec => Prompt {
            parts: vec![
                minionerec_header(SEQREC_INSTRUCTION),
                minionerec_user(&format!(
                    "{lead}The user has interacted with items {} in chronological order. Can you \
                     predict the next possible item that the user may expect?",
                    join_sids(history_sids)
                )),
            ],
            response,
        },
        PromptStyle::Compact => compact_seqrec(lead, history_sids, response),
    }
}

fn compact_seqrec<S: AsRef<str>>(lead: &str, history_sids: &[S], response: String) -> Prompt {
    Prompt {
        parts: vec![format!(
            "{lead}history: {}\nnext:\n",
            join(history_sids, " ")
        )],
        response,
    }
}

/// Title → SID alignment (`SidItemFeatDataset`, title2sid direction).
pub fn title_to_sid(style: PromptStyle, title: &str, sid: &str) -> Prompt {
    let response = format!("{sid}\n");
    match style {
        PromptStyle::Minionerec => Prompt {
            parts: vec![
                minionerec_header("Answer the question about item identification."),
                minionerec_user(&format!("Which item has the title: {title}?")),
            ],
            response,
        },
        PromptStyle::Compact => Prompt {
            parts: vec![format!("title: {title}\nsid:\n")],
            response,
        },
    }
}

/// SID → title alignment (`SidItemFeatDataset`, sid2title direction).
pub fn sid_to_title(style: PromptStyle, sid: &str, title: &str) -> Prompt {
    let response = format!("{title}\n");
    match style {
        PromptStyle::Minionerec => Prompt {
            parts: vec![
                minionerec_header("Answer the question about item identification."),
                minionerec_user(&format!("What is the title of item \"{sid}\"?")),
            ],
            response,
        },
        PromptStyle::Compact => Prompt {
            parts: vec![format!("sid: {sid}\ntitle:\n")],
            response,
        },
    }
}

/// SID history → next item's title (`FusionSeqRecDataset`).
pub fn seqrec_to_title<S: AsRef<str>>(
    style: PromptStyle,
    history_sids: &[S],
    title: &str,
) -> Prompt {
    let response = format!("{title}\n");
    match style {
        PromptStyle::Minionerec => Prompt {
            parts: vec![
                minionerec_header(
                    "Can you recommend the next item for the user based on their interaction history?",
                ),
                minionerec_user(&format!(
                    "The user has sequentially interacted with items {}. Can you recommend the \
                     next item for him? Tell me the title of the item",
                    join_sids(history_sids)
                )),
            ],
            response,
        },
        PromptStyle::Compact => Prompt {
            parts: vec![format!(
                "history: {}\nnext title:\n",
                join(history_sids, " ")
            )],
            response,
        },
    }
}

/// Title history → SID (`TitleHistory2SidSFTDataset`); `category` as mapped by [`category_phrase`].
pub fn title_history_to_sid<S: AsRef<str>>(
    style: PromptStyle,
    category: &str,
    history_titles: &[S],
    sid: &str,
) -> Prompt {
    let response = format!("{sid}\n");
    match style {
        PromptStyle::Minionerec => Prompt {
            parts: vec![
                minionerec_header(
                    "Based on the user's historical interaction with item titles, predict the \
                     semantic ID of the next item they may expect.",
                ),
                minionerec_user(&format!(
                    "The user has interacted with the following {category} items in \
                     chronological order: {}. Can you predict the next item the user may expect?",
                    join_titles(history_titles)
                )),
            ],
            response,
        },
        PromptStyle::Compact => Prompt {
            parts: vec![format!(
                "titles: {}\nnext sid:\n",
                join(history_titles, " | ")
            )],
            response,
        },
    }
}

/// The reference's 11 instruction variants of `SFTData` (title history → title), `{c}` = category.
pub const TITLE_TASK_INSTRUCTIONS: [&str; 11] = [
    "Given a list of {c} the user recetenly enjoy, please write a new {c} that the user may bought",
    "Considering the {c} that has recently captured the user's interest, kindly create a compilation of other {c} that the user might have played prior to this.",
    "Based on the user's current gaming preference, please draft a list of potential {c} they may have experienced beforehand.",
    "Reflecting on the {c} the user has taken pleasure in recently, we request that you formulate a list of {c} that may have preceded the user's current enjoyment.",
    "In light of the recent gaming enjoyment expressed by the user, please assemble a list of {c} that could potentially include past titles the user has engaged with.",
    "Taking into account the {c} that has lately provided enjoyment to the user, please put together an inventory of {c} the user might have explored previously.",
    "Given the user's newfound enjoyment of a particular {c}, would you kindly generate a roster of other {c} that might resonate with their past gaming experiences?",
    "In response to the user's recent fondness for a specific {c}, we seek your assistance in listing possible {c} the user may have delighted in earlier.",
    "With respect to the {c} currently enjoyed by the user, please compile a suggestive list of {c} they may have played in the past.",
    "Bearing in mind the {c} that the user has recently been enthralled by, please construct a catalog of other {c} that the user potentially partook in beforehand.",
    "In relation to the user's recent entertainment with a given {c}, it would be appreciated if you could curate a list of {c} that might form part of the user's previous gaming history.",
];

/// Title history → quoted next title (`SFTData`); `variant` picks one of the 11 instructions.
pub fn title_history_to_title<S: AsRef<str>>(
    style: PromptStyle,
    category: &str,
    variant: usize,
    history_titles: &[S],
    title: &str,
) -> Prompt {
    match style {
        PromptStyle::Minionerec => {
            let instr = TITLE_TASK_INSTRUCTIONS[variant % TITLE_TASK_INSTRUCTIONS.len()]
                .replace("{c}", category);
            // This dataset's header ends "\n \n" instead of "\n\n" (a real quirk of the reference).
            let mut header = minionerec_header(&instr);
            header.truncate(header.len() - 2);
            header.push_str("\n \n");
            let t1 = history_titles
                .iter()
                .map(|t| format!("\"{}\"", t.as_ref()))
                .collect::<Vec<_>>()
                .join(",\t");
            Prompt {
                parts: vec![
                    header,
                    minionerec_user(&format!(
                        "The user has palyed the following {category}s before: {t1}"
                    )),
                ],
                response: format!("\"{title}\"\n"),
            }
        }
        PromptStyle::Compact => Prompt {
            parts: vec![format!(
                "titles: {}\nnext title:\n",
                join(history_titles, " | ")
            )],
            response: format!("{title}\n"),
        },
    }
}

/// A header-less prompt: the RL datasets tokenise the `### User Input:` block alone.
fn user_only(input: String) -> Prompt {
    Prompt {
        parts: vec![minionerec_user(&input)],
        response: String::new(),
    }
}

/// RL SID history prompt (rl.py `SidDataset`): the SFT phrasing without the header.
pub fn rl_seqrec<S: AsRef<str>>(style: PromptStyle, history_sids: &[S]) -> Prompt {
    rl_seqrec_led(style, "", history_sids)
}

/// [`rl_seqrec`] with `lead` (the U/E prompt tokens) before the history's sentence.
pub fn rl_seqrec_led<S: AsRef<str>>(style: PromptStyle, lead: &str, history_sids: &[S]) -> Prompt {
    match style {
        PromptStyle::Minionerec => user_only(format!(
            "{lead}The user has interacted with items {} in chronological order. Can you predict \
             the next possible item that the user may expect?",
            join_sids(history_sids)
        )),
        PromptStyle::Compact => Prompt {
            response: String::new(),
            ..sft_seqrec_led(style, lead, history_sids, "")
        },
    }
}

/// RL title → SID prompt (`RLTitle2SidDataset`, title half).
pub fn rl_title(style: PromptStyle, title: &str) -> Prompt {
    match style {
        PromptStyle::Minionerec => user_only(format!("Which item has the title: {title}?")),
        PromptStyle::Compact => Prompt {
            response: String::new(),
            ..title_to_sid(style, title, "")
        },
    }
}

/// RL description → SID prompt (`RLTitle2SidDataset`, description half).
pub fn rl_description(style: PromptStyle, description: &str) -> Prompt {
    match style {
        PromptStyle::Minionerec => user_only(format!(
            "An item can be described as follows: \"{description}\". Which item is it describing?"
        )),
        PromptStyle::Compact => Prompt {
            parts: vec![format!("description: {description}\nsid:\n")],
            response: String::new(),
        },
    }
}

/// RL title history → SID prompt (`RLSeqTitle2SidDataset`).
pub fn rl_title_history<S: AsRef<str>>(style: PromptStyle, category: &str, titles: &[S]) -> Prompt {
    match style {
        PromptStyle::Minionerec => user_only(format!(
            "Given the title sequence of user historical interactive items: {}, can you \
             recommend a suitable next item for the user?",
            titles
                .iter()
                .map(|t| format!("\"{}\"", t.as_ref()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        PromptStyle::Compact => Prompt {
            response: String::new(),
            ..title_history_to_sid(style, category, titles, "")
        },
    }
}

/// The reference's category phrase for a dataset name (used inside several templates).
pub fn category_phrase(dataset: &str) -> String {
    match dataset {
        "Industrial_and_Scientific" => "industrial and scientific items".into(),
        "Office_Products" => "office products".into(),
        "Toys_and_Games" => "toys and games".into(),
        "Sports" | "Sports_and_Outdoors" => "sports and outdoors".into(),
        "Books" => "books".into(),
        other => other.replace('_', " ").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_the_reference_strings() {
        let p = rl_seqrec(
            PromptStyle::Minionerec,
            &["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"],
        );
        assert_eq!(
            p.text(),
            "### User Input: \nThe user has interacted with items <a_1><b_2><c_3>, <a_4><b_5><c_6> in chronological order. Can you predict the next possible item that the user may expect?\n\n### Response:\n"
        );
        assert_eq!(p.parts.len(), 1);
        assert_eq!(
            rl_description(PromptStyle::Minionerec, "A tool").text(),
            "### User Input: \nAn item can be described as follows: \"A tool\". Which item is it describing?\n\n### Response:\n"
        );
        assert_eq!(
            rl_title_history(PromptStyle::Minionerec, "x", &["A", "B"]).text(),
            "### User Input: \nGiven the title sequence of user historical interactive items: \"A\", \"B\", can you recommend a suitable next item for the user?\n\n### Response:\n"
        );
        assert!(rl_title(PromptStyle::Compact, "T").response.is_empty());
    }

    #[test]
    fn eval_prompt_is_verbatim() {
        let p = eval_seqrec(
            PromptStyle::Minionerec,
            &["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"],
        );
        assert_eq!(
            p.text(),
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request. \n\n### Instruction:\nCan you predict the next possible item that the user may expect?\n\n### User Input: \nCan you predict the next possible item the user may expect, given the following chronological interaction history: <a_1><b_2><c_3>, <a_4><b_5><c_6>\n\n### Response:\n"
        );
        assert_eq!(p.parts.len(), 2);
        assert!(p.text().ends_with(MINIONEREC_RESPONSE_TAIL));
    }

    #[test]
    fn sft_and_title_prompts() {
        let p = sft_seqrec(PromptStyle::Minionerec, &["<a_1>"], "<a_2>");
        assert!(p.parts[1].contains(
            "The user has interacted with items <a_1> in chronological order. Can you predict"
        ));
        assert_eq!(p.response, "<a_2>\n");
        let p = title_history_to_title(
            PromptStyle::Minionerec,
            "toys and games",
            0,
            &["A", "B"],
            "C",
        );
        assert!(
            p.parts[0].ends_with("the user may bought\n \n"),
            "{:?}",
            p.parts[0]
        );
        assert!(p.parts[1].contains("palyed the following toys and gamess before: \"A\",\t\"B\"\n"));
        assert_eq!(p.response, "\"C\"\n");
        let p = title_history_to_sid(
            PromptStyle::Minionerec,
            "industrial and scientific items",
            &["A"],
            "<a_1>",
        );
        assert!(p.parts[1].contains(
            "following industrial and scientific items items in chronological order: \"A\". Can"
        ));
        assert_eq!(
            category_phrase("Industrial_and_Scientific"),
            "industrial and scientific items"
        );
        let c = eval_seqrec(PromptStyle::Compact, &["<a_1><b_2>", "<a_3><b_4>"]);
        assert_eq!(c.text(), "history: <a_1><b_2> <a_3><b_4>\nnext:\n");
    }
}

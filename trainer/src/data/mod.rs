//! `sidrec-trainer data ...`: making dataset directories and looking at them.

pub mod amazon18;
pub mod amazon23;
pub mod features;
pub mod minionerec;
pub mod samples;
pub mod stats;
pub mod synth;
pub mod synth_grammar;

//! The review policy (the `[review]` table of a platform's config): how
//! many approvals each class of broadcast needs before this platform signs
//! it. The one place the rule "who may publish what" is decided.

use protocol::BroadcastClass;
use serde::{Deserialize, Serialize};

use crate::accounts::{Account, Role};

/// Who approves.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Approver {
    /// Approvers of this platform.
    #[default]
    Here,
    /// The tier above: a submitted draft travels up as a signed publish
    /// request, and the tier above signs and issues it (not at the district).
    Above,
}

/// How one class of broadcast is reviewed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Approvals needed, each by an approver who did not draft it (0: the
    /// drafter publishes at submit).
    pub approvals: u8,
    #[serde(default)]
    pub approver: Approver,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewPolicy {
    pub emergency: Rule,
    pub drill: Rule,
    pub daily: Rule,
    /// Who may go live alone: a class listed true needs an approver
    /// present (their name and password given as the live broadcast
    /// opens; another person than the speaker).
    pub live: LiveRule,
}

/// Which live broadcasts need a second person present to open.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveRule {
    pub emergency: bool,
    pub drill: bool,
    pub daily: bool,
}

impl Default for LiveRule {
    fn default() -> Self {
        LiveRule {
            emergency: true,
            drill: true,
            daily: false,
        }
    }
}

impl Default for ReviewPolicy {
    fn default() -> Self {
        ReviewPolicy {
            emergency: Rule {
                approvals: 1,
                approver: Approver::Here,
            },
            drill: Rule {
                approvals: 1,
                approver: Approver::Here,
            },
            daily: Rule {
                approvals: 0,
                approver: Approver::Here,
            },
            live: LiveRule::default(),
        }
    }
}

/// Most approvals a rule may ask for.
pub const MAX_APPROVALS: u8 = 3;

impl ReviewPolicy {
    pub fn check(&self) -> Result<(), String> {
        for (name, r) in [
            ("emergency", self.emergency),
            ("drill", self.drill),
            ("daily", self.daily),
        ] {
            if r.approvals > MAX_APPROVALS {
                return Err(format!(
                    "review.{name}.approvals: {} is more than {MAX_APPROVALS}",
                    r.approvals
                ));
            }
        }
        if !self.live.emergency {
            return Err(
                "review.live.emergency: a live emergency needs an approver present (R10)".into(),
            );
        }
        if self.emergency.approvals == 0 && self.emergency.approver == Approver::Here {
            return Err(
                "review.emergency.approvals: an emergency needs at least one approver (R10)".into(),
            );
        }
        Ok(())
    }

    pub fn rule(&self, class: BroadcastClass) -> Rule {
        match class {
            BroadcastClass::Emergency => self.emergency,
            BroadcastClass::Drill => self.drill,
            BroadcastClass::Daily => self.daily,
        }
    }

    /// True when a live broadcast of `class` needs an approver present.
    pub fn live_needs_approver(&self, class: BroadcastClass) -> bool {
        match class {
            BroadcastClass::Emergency => self.live.emergency,
            BroadcastClass::Drill => self.live.drill,
            BroadcastClass::Daily => self.live.daily,
        }
    }

    /// Approvals a draft of `class` needs here.
    pub fn approvals_needed(&self, class: BroadcastClass) -> u8 {
        self.rule(class).approvals
    }

    /// True when drafts of `class` go to the tier above for approval.
    pub fn goes_above(&self, class: BroadcastClass) -> bool {
        self.rule(class).approver == Approver::Above
    }

    /// True when some class goes above (a district has no tier above).
    pub fn any_above(&self) -> bool {
        [self.emergency, self.drill, self.daily]
            .iter()
            .any(|r| r.approver == Approver::Above)
    }
}

/// The roles that may draft a broadcast of `class`: drafters draft any;
/// clerks draft daily notices, and emergencies and drills only as requests
/// for an approver.
pub fn may_draft(account: &Account, _class: BroadcastClass) -> bool {
    account.has(Role::Drafter) || account.has(Role::Clerk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_emergency_always_needs_an_approver_present() {
        let p = ReviewPolicy::default();
        assert!(p.live_needs_approver(BroadcastClass::Emergency));
        assert!(p.live_needs_approver(BroadcastClass::Drill));
        assert!(!p.live_needs_approver(BroadcastClass::Daily));
        let alone = ReviewPolicy {
            live: LiveRule {
                emergency: false,
                ..LiveRule::default()
            },
            ..ReviewPolicy::default()
        };
        assert!(alone.check().unwrap_err().contains("review.live.emergency"));
    }
}

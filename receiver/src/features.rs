//! What the agent counts, feature by feature, and how. Each eBPF program
//! belongs to one feature; a program the kernel refuses switches its
//! feature to a fallback or turns it off, with one warning line, instead
//! of stopping the agent. Only [`Feature::TcpConnections`] is required.

pub use health::{Feature, Level, Levels};

/// How a feature works on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Works as designed, through `via`.
    On { via: String },
    /// Works another way (`via`) because the first was refused (`why`).
    Fallback { via: String, why: String },
    /// Does not work, because `why`.
    Off { why: String },
}

impl State {
    pub fn level(&self) -> Level {
        match self {
            State::On { .. } => Level::On,
            State::Fallback { .. } => Level::Fallback,
            State::Off { .. } => Level::Off,
        }
    }
}

/// Every feature's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    states: Vec<State>,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            states: Feature::ALL
                .iter()
                .map(|_| State::Off {
                    why: "not loaded".to_owned(),
                })
                .collect(),
        }
    }
}

impl Features {
    pub fn set(&mut self, feature: Feature, state: State) {
        self.states[feature.index()] = state;
    }

    pub fn get(&self, feature: Feature) -> &State {
        &self.states[feature.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Feature, &State)> {
        Feature::ALL.iter().copied().zip(self.states.iter())
    }

    /// The levels alone, for the health metrics.
    pub fn levels(&self) -> Levels {
        let mut levels = Levels::default();
        for (feature, state) in self.iter() {
            levels.set(feature, state.level());
        }
        levels
    }

    /// One line per feature that is not on, for the log.
    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.iter().filter_map(|(feature, state)| match state {
            State::On { .. } => None,
            State::Fallback { via, why } => Some(format!(
                "feature {feature}: fallback to {via}, because {why}"
            )),
            State::Off { why } => Some(format!(
                "feature {feature}: off, because {why}; {}",
                feature.loss()
            )),
        })
    }
}

/// The programs a test asks the loader to treat as refused by the kernel
/// (`FLOWTEL_TEST_REFUSE_PROGRAMS=name,name`; `conntrack` for feature
/// nat's netlink reads): for tests of the fallbacks only, never needed in
/// production.
pub fn refused_for_test(program: &str) -> bool {
    std::env::var(REFUSE_FOR_TEST)
        .map(|names| names.split(',').any(|name| name.trim() == program))
        .unwrap_or(false)
}

pub const REFUSE_FOR_TEST: &str = "FLOWTEL_TEST_REFUSE_PROGRAMS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_starts_off_and_takes_its_state() {
        let mut features = Features::default();
        assert!(features.iter().all(|(_, s)| s.level() == Level::Off));
        features.set(
            Feature::Udp,
            State::Fallback {
                via: "kprobes".into(),
                why: "refused".into(),
            },
        );
        assert_eq!(features.levels().get(Feature::Udp), Level::Fallback);
        assert_eq!(features.levels().get(Feature::TcpLiveBytes), Level::Off);
    }

    #[test]
    fn a_feature_that_is_off_says_what_is_lost() {
        let mut features = Features::default();
        for feature in Feature::ALL {
            features.set(feature, State::On { via: "x".into() });
        }
        features.set(
            Feature::TcpLiveBytes,
            State::Off {
                why: "the kernel refused flowtel_tcp_refresh: Operation not permitted".into(),
            },
        );
        let warnings: Vec<String> = features.warnings().collect();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("feature tcp live bytes: off, because the kernel refused")
                && warnings[0].ends_with("appear only when it closes"),
            "{}",
            warnings[0]
        );
    }
}

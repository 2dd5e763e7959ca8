//! When the agent evaluates. Without DNS, at every evaluation tick. With
//! DNS, the lookups for the period's hosts run first, beside the agent (a
//! slow resolver delays no drain); hosts first seen while they ran are
//! looked up once more; then it evaluates, so no finding comes out with DNS
//! not yet asked about its host. A tick that comes while lookups run waits
//! for them.

/// Where the agent is between two evaluations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    #[default]
    Idle,
    /// The period's hosts are being looked up.
    Resolving,
    /// The hosts that came meanwhile are being looked up.
    ResolvingAgain,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Evaluate,
    /// Look up the period's hosts (or, after answers, those still unasked).
    LookUp,
    Wait,
}

impl Schedule {
    /// The evaluation tick.
    pub fn tick(&mut self, with_dns: bool) -> Step {
        match (*self, with_dns) {
            (Schedule::Idle, false) => Step::Evaluate,
            (Schedule::Idle, true) => {
                *self = Schedule::Resolving;
                Step::LookUp
            }
            (Schedule::Resolving | Schedule::ResolvingAgain, _) => Step::Wait,
        }
    }

    /// Answers arrived; `unasked` says whether hosts came meanwhile.
    pub fn answered(&mut self, unasked: bool) -> Step {
        match (*self, unasked) {
            (Schedule::Resolving, true) => {
                *self = Schedule::ResolvingAgain;
                Step::LookUp
            }
            _ => {
                *self = Schedule::Idle;
                Step::Evaluate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_dns_every_tick_evaluates() {
        let mut schedule = Schedule::default();
        assert_eq!((schedule.tick(false), schedule.tick(false)), (Step::Evaluate, Step::Evaluate));
        assert_eq!(schedule, Schedule::Idle);
    }

    #[test]
    fn with_dns_an_evaluation_waits_for_its_lookups_and_asks_once_more_about_newcomers() {
        let mut schedule = Schedule::default();
        assert_eq!(schedule.tick(true), Step::LookUp);
        assert_eq!(schedule.tick(true), Step::Wait, "a tick while the lookups run waits for them");
        assert_eq!(schedule.answered(true), Step::LookUp, "hosts that came meanwhile are asked about");
        assert_eq!(schedule.tick(true), Step::Wait);
        assert_eq!(schedule.answered(true), Step::Evaluate, "only once: newcomers after that wait for the next");
        assert_eq!(schedule, Schedule::Idle);
        assert_eq!(schedule.tick(true), Step::LookUp);
        assert_eq!(schedule.answered(false), Step::Evaluate, "no newcomers: evaluate at once");
    }
}

//! Traffic patterns as a number of concurrent users over time.

use std::time::Duration;

/// A phase of `PHASES` traffic: starts with `initial_users` and adds `spawn_rate` users per
/// minute for `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub initial_users: u32,
    pub spawn_rate_per_minute: u32,
    pub duration: Duration,
}

/// `STAIRS` traffic: `steps` steps of `step_duration`, each adding `users_per_step` users.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stairs {
    pub step_duration: Duration,
    pub steps: u32,
    pub users_per_step: u32,
}

/// Concurrent users as a function of time.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    Phases(Vec<Phase>),
    Stairs(Stairs),
    /// `users` users for `duration` (benchmarks).
    Constant {
        users: u32,
        duration: Duration,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatternError {
    #[error("{field} is {value}: {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

fn invalid(field: &'static str, value: impl ToString, expected: &'static str) -> PatternError {
    PatternError::Invalid {
        field,
        value: value.to_string(),
        expected,
    }
}

impl Pattern {
    /// Checks that the pattern has users and time.
    pub fn validate(&self) -> Result<(), PatternError> {
        match self {
            Pattern::Phases(phases) => {
                if phases.is_empty() {
                    return Err(invalid("Phases", "empty", "give at least one phase"));
                }
                for p in phases {
                    if p.initial_users == 0 {
                        return Err(invalid(
                            "Phases.InitialNumberOfUsers",
                            0,
                            "at least one user must start each phase",
                        ));
                    }
                    if p.duration.is_zero() {
                        return Err(invalid(
                            "Phases.DurationInSeconds",
                            0,
                            "a phase must last at least a second",
                        ));
                    }
                }
            }
            Pattern::Stairs(s) => {
                if s.steps == 0 {
                    return Err(invalid("Stairs.NumberOfSteps", 0, "at least one step"));
                }
                if s.users_per_step == 0 {
                    return Err(invalid("Stairs.UsersPerStep", 0, "at least one user"));
                }
                if s.step_duration.is_zero() {
                    return Err(invalid(
                        "Stairs.DurationInSeconds",
                        0,
                        "a step must last at least a second",
                    ));
                }
            }
            Pattern::Constant { users, duration } => {
                if *users == 0 || duration.is_zero() {
                    return Err(invalid(
                        "users/duration",
                        format!("{users}/{duration:?}"),
                        "at least one user for a positive time",
                    ));
                }
            }
        }
        Ok(())
    }

    /// How long the pattern runs.
    pub fn duration(&self) -> Duration {
        match self {
            Pattern::Phases(phases) => phases.iter().map(|p| p.duration).sum(),
            Pattern::Stairs(s) => s.step_duration * s.steps,
            Pattern::Constant { duration, .. } => *duration,
        }
    }

    /// Users the pattern asks for at `t` seconds after the start (0 after the end).
    pub fn users_at(&self, t: f64) -> u32 {
        if t < 0.0 || t >= self.duration().as_secs_f64() {
            return 0;
        }
        match self {
            Pattern::Phases(phases) => {
                let mut start = 0.0;
                for p in phases {
                    let len = p.duration.as_secs_f64();
                    if t < start + len {
                        let spawned = (f64::from(p.spawn_rate_per_minute) * (t - start) / 60.0)
                            .floor() as u32;
                        return p.initial_users.saturating_add(spawned);
                    }
                    start += len;
                }
                0
            }
            Pattern::Stairs(s) => {
                let step = (t / s.step_duration.as_secs_f64()).floor() as u32;
                s.users_per_step
                    .saturating_mul(step.min(s.steps.saturating_sub(1)) + 1)
            }
            Pattern::Constant { users, .. } => *users,
        }
    }

    /// The most users at any time.
    pub fn peak_users(&self) -> u32 {
        self.change_points()
            .iter()
            .map(|&t| self.users_at(t))
            .max()
            .unwrap_or(0)
    }

    /// Times (seconds) at which the user count may change, in order, the start included.
    pub fn change_points(&self) -> Vec<f64> {
        let mut points = vec![0.0];
        match self {
            Pattern::Phases(phases) => {
                let mut start = 0.0;
                for p in phases {
                    let len = p.duration.as_secs_f64();
                    points.push(start);
                    if p.spawn_rate_per_minute > 0 {
                        let every = 60.0 / f64::from(p.spawn_rate_per_minute);
                        let mut t = start + every;
                        while t < start + len {
                            points.push(t);
                            t += every;
                        }
                    }
                    start += len;
                }
            }
            Pattern::Stairs(s) => {
                for i in 1..s.steps {
                    points.push(s.step_duration.as_secs_f64() * f64::from(i));
                }
            }
            Pattern::Constant { .. } => {}
        }
        points.sort_by(f64::total_cmp);
        points.dedup();
        points
    }

    /// The pattern's offered load in user-seconds (the integral of `users_at`).
    pub fn user_seconds(&self) -> f64 {
        let end = self.duration().as_secs_f64();
        let points = self.change_points();
        points
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let next = points.get(i + 1).copied().unwrap_or(end);
                // The count at the interval's middle: exactly at a change point, float
                // rounding can land on either side of it.
                f64::from(self.users_at((t + next) / 2.0)) * (next - t)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_start_with_their_users_and_spawn_per_minute() {
        let p = Pattern::Phases(vec![
            Phase {
                initial_users: 2,
                spawn_rate_per_minute: 6,
                duration: Duration::from_secs(60),
            },
            Phase {
                initial_users: 1,
                spawn_rate_per_minute: 0,
                duration: Duration::from_secs(30),
            },
        ]);
        assert_eq!(p.duration(), Duration::from_secs(90));
        assert_eq!(p.users_at(0.0), 2);
        assert_eq!(p.users_at(9.9), 2);
        assert_eq!(p.users_at(10.0), 3);
        assert_eq!(p.users_at(59.9), 7);
        assert_eq!(p.users_at(60.0), 1);
        assert_eq!(p.users_at(90.0), 0);
        assert_eq!(p.peak_users(), 7);
        // 10 s each at 2..=7 users, then 30 s at 1.
        assert!((p.user_seconds() - (10.0 * (2 + 3 + 4 + 5 + 6 + 7) as f64 + 30.0)).abs() < 1e-9);
    }

    #[test]
    fn offered_load_counts_every_spawned_user_whatever_the_rate() {
        // 60 / 11 s between spawns is not exact in floating point.
        for rate in [7u32, 11, 13, 59] {
            let p = Pattern::Phases(vec![Phase {
                initial_users: 1,
                spawn_rate_per_minute: rate,
                duration: Duration::from_secs(60),
            }]);
            let every = 60.0 / f64::from(rate);
            // Users 1, 2, ... each for `every` seconds: 1 + 2 + ... + rate.
            let want = every * f64::from(rate * (rate + 1) / 2);
            assert!(
                (p.user_seconds() - want).abs() < 1e-6,
                "rate {rate}: {}",
                p.user_seconds()
            );
        }
    }

    #[test]
    fn stairs_add_users_each_step() {
        let p = Pattern::Stairs(Stairs {
            step_duration: Duration::from_secs(10),
            steps: 3,
            users_per_step: 4,
        });
        assert_eq!(
            [0.0, 9.99, 10.0, 25.0, 29.9, 30.0].map(|t| p.users_at(t)),
            [4, 4, 8, 12, 12, 0]
        );
        assert_eq!(p.user_seconds(), 10.0 * (4.0 + 8.0 + 12.0));
    }

    #[test]
    fn empty_patterns_are_refused_by_field() {
        let e = Pattern::Stairs(Stairs {
            step_duration: Duration::from_secs(10),
            steps: 0,
            users_per_step: 1,
        })
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("Stairs.NumberOfSteps"), "{e}");
        let e = Pattern::Phases(vec![]).validate().unwrap_err();
        assert!(e.to_string().contains("Phases"), "{e}");
    }
}

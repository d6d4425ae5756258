//! Run times of a cron schedule ([`keelson_api::validation::cron::Schedule`], robfig/cron's
//! standard syntax as Kubernetes parses it) in a time zone, and the scheduled times a CronJob
//! has missed (pkg/controller/cronjob/utils.go `mostRecentScheduleTime`).

use jiff::{Timestamp, civil::Date, tz::TimeZone};
use keelson_api::validation::cron::Schedule;

/// How far ahead a run time is looked for (robfig/cron gives up after five years too).
const SEARCH_DAYS: usize = 5 * 366 + 1;

/// A CronJob's schedule with its time zone.
#[derive(Debug, Clone)]
pub struct Zoned {
    /// The parsed fields.
    pub schedule: Schedule,
    /// Where the fields are read.
    pub zone: TimeZone,
}

/// Why a CronJob's schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `spec.schedule` does not parse (robfig/cron's message).
    #[error("unparseable schedule: {schedule:?} : {message}")]
    Unparseable {
        /// The schedule.
        schedule: String,
        /// Why.
        message: String,
    },
    /// `spec.timeZone` (or a `TZ=` prefix) names no zone of the time zone database.
    #[error("invalid timeZone: {zone:?}")]
    UnknownZone {
        /// The zone's name.
        zone: String,
    },
    /// Two consecutive run times less than a second apart.
    #[error("time difference between two schedules is less than 1 second")]
    TooClose,
}

impl Zoned {
    /// Parses `schedule`, read in `time_zone` (the spec's `timeZone`), else the schedule's own
    /// `TZ=` prefix, else `local`: the controller's own zone, as Kubernetes reads a CronJob
    /// without a zone in kube-controller-manager's local time.
    pub fn parse(
        schedule: &str,
        time_zone: Option<&str>,
        local: &TimeZone,
    ) -> Result<Self, ScheduleError> {
        let parsed = keelson_api::validation::cron::parse(schedule).map_err(|message| {
            ScheduleError::Unparseable {
                schedule: schedule.to_owned(),
                message,
            }
        })?;
        let name = time_zone.or(parsed.zone.as_deref());
        let zone = match name {
            None => local.clone(),
            Some("UTC" | "Etc/UTC") => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| ScheduleError::UnknownZone {
                zone: name.to_owned(),
            })?,
        };
        Ok(Self {
            schedule: parsed,
            zone,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let s = &self.schedule;
        let dom = s.days_of_month & (1 << date.day()) != 0;
        let dow = s.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if s.days_of_month_star || s.days_of_week_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first run time strictly after `after` (`None` when there is none within five
    /// years, e.g. `0 0 30 2 *`).
    pub fn next(&self, after: Timestamp) -> Option<Timestamp> {
        if let Some(every) = self.schedule.every_seconds {
            let every = i64::try_from(every).ok()?;
            return Timestamp::from_second(after.as_second().checked_add(every)?).ok();
        }
        let local = after.to_zoned(self.zone.clone());
        let mut day = local.date();
        for _ in 0..SEARCH_DAYS {
            if self.schedule.months & (1 << day.month()) != 0 && self.day_matches(day) {
                for hour in (0..24_i8).filter(|h| self.schedule.hours & (1 << h) != 0) {
                    for minute in (0..60_i8).filter(|m| self.schedule.minutes & (1 << m) != 0) {
                        let Ok(zoned) = self
                            .zone
                            .to_ambiguous_zoned(day.at(hour, minute, 0, 0))
                            .compatible()
                        else {
                            continue;
                        };
                        if zoned.timestamp() > after {
                            return Some(zoned.timestamp());
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

/// The most recent scheduled time in `(earliest, now]` and how many there were
/// (`mostRecentScheduleTime`): `earliest` is the last schedule time (else the CronJob's
/// creation), moved up to `now - startingDeadlineSeconds` when that is later. More than two
/// missed times are counted from the interval between the first two, as Kubernetes does.
pub fn most_recent(
    schedule: &Zoned,
    earliest: Timestamp,
    now: Timestamp,
) -> Result<(Option<Timestamp>, i64), ScheduleError> {
    let Some(t1) = schedule.next(earliest) else {
        return Ok((None, 0));
    };
    if now < t1 {
        return Ok((None, 0));
    }
    let Some(t2) = schedule.next(t1) else {
        return Ok((Some(t1), 1));
    };
    if now < t2 {
        return Ok((Some(t1), 1));
    }
    let between = (t2.as_second() - t1.as_second()).max(0);
    if between < 1 {
        return Err(ScheduleError::TooClose);
    }
    let elapsed = now.as_second() - t1.as_second();
    let missed = elapsed / between + 1;
    // Jump close to the end, then walk the rest (irregular schedules may need a few steps).
    let walk = |from: Timestamp| {
        let mut found = None;
        let mut cursor = from;
        for _ in 0..10_000 {
            match schedule.next(cursor) {
                Some(t) if t <= now => {
                    found = Some(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        found
    };
    let jump = Timestamp::from_second(t1.as_second() + (missed - 2).max(0) * between - 1)
        .unwrap_or(t1)
        .max(t1);
    let latest = walk(jump).or_else(|| walk(t1)).unwrap_or(t1);
    Ok((Some(latest), missed))
}

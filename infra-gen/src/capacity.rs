//! Scheduled capacity: windows of raised HPA bounds (`autoscaling.schedule`) and an operator's
//! `infra-gen scale` override.
//!
//! A window opens `lead` before its start (so new pods are ready when the clients arrive) and
//! closes `duration` after it. In the cluster, two CronJobs per window set the HPA's bounds
//! when it opens and closes (see `render`), in the window's time zone, so nothing depends on
//! CI running. Here: the cron subset those schedules use, the shift of a start by the lead
//! time (or to the end) into another CronJob schedule, the occurrences of a window, and the
//! bounds in force at an instant, which every deploy applies instead of the committed ones.

use std::collections::BTreeSet;
use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, Zoned};

use crate::duration::parse as parse_duration;
use crate::env::model::CapacityWindow;

/// The default lead time: a CronJob's pod starts (a minute on Fargate), the HPA raises the
/// count at its next sync, and the new pods start and pass readiness.
pub const DEFAULT_LEAD: SignedDuration = SignedDuration::from_mins(5);

/// How far ahead occurrences are looked for (a start that never comes in this time is an
/// error, overlaps and time changes are checked over it).
const HORIZON_DAYS: i64 = 2 * 366;

/// The field manager of the bounds a window or an override sets: kept apart from `infra-gen`
/// (which applies the whole HPA, bounds included, at every deploy), so a scale's `suspend` on
/// a window's CronJob survives a deploy's apply of that CronJob.
pub const FIELD_MANAGER: &str = "infra-gen-capacity";

/// Longest CronJob name (its Jobs get an 11-character suffix within 63).
pub const MAX_CRONJOB_NAME: usize = 52;

/// The two CronJobs of a window: raising the bounds, and lowering them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Up,
    Down,
}

/// The name of a window's CronJob: `<workload>-capacity-<window>-up|down`.
pub fn cronjob_name(workload: &str, window: &str, edge: Edge) -> String {
    let edge = match edge {
        Edge::Up => "up",
        Edge::Down => "down",
    };
    format!("{workload}-capacity-{window}-{edge}")
}

/// One field of a cron schedule: any value, or a set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Any,
    Set(BTreeSet<u8>),
}

impl Field {
    fn contains(&self, v: u8) -> bool {
        match self {
            Field::Any => true,
            Field::Set(s) => s.contains(&v),
        }
    }

    fn text(&self) -> String {
        match self {
            Field::Any => "*".into(),
            Field::Set(s) => s.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        }
    }
}

/// A cron schedule of the form a capacity window's start takes: one minute, one or more hours,
/// and day-of-month, month and weekday fields as CronJob's `schedule` reads them (a day
/// matches when either restricted day field does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minute: u8,
    hours: BTreeSet<u8>,
    dom: Field,
    month: Field,
    dow: Field,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(text: &str, lo: u8, hi: u8, names: &[&str], what: &str) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(lo + i as u8);
    }
    match text.parse::<u8>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("{what} {text:?} is not a number from {lo} to {hi}")),
    }
}

/// Parses one field: `*`, `N`, `N-M`, `*/S`, `N-M/S`, and comma lists of those.
fn parse_field(text: &str, lo: u8, hi: u8, names: &[&str], what: &str) -> Result<Field, String> {
    if text == "*" || text == "?" {
        return Ok(Field::Any);
    }
    let mut set = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step = s
                    .parse::<u8>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what} step {s:?} is not a positive number"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, lo, hi, names, what)?,
                parse_value(b, lo, hi, names, what)?,
            )
        } else {
            let v = parse_value(range, lo, hi, names, what)?;
            (v, if part.contains('/') { hi } else { v })
        };
        if from > to {
            return Err(format!("{what} range {range:?} runs backwards"));
        }
        set.extend((from..=to).step_by(usize::from(step)));
    }
    Ok(Field::Set(set))
}

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.starts_with('@') {
            return Err(format!(
                "{text:?}: write the five fields, e.g. \"0 11 * * wed\" for 11:00 every Wednesday"
            ));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "{text:?} has {} fields, not 5 (minute hour day-of-month month weekday)",
                fields.len()
            ));
        };
        let minute = match parse_field(minute, 0, 59, &[], "minute")? {
            Field::Set(s) if s.len() == 1 => s.into_iter().next().unwrap_or_default(),
            _ => {
                return Err(format!(
                    "minute {minute:?} is not one number: a window starts at one minute of the hour"
                ));
            }
        };
        let hours = match parse_field(hour, 0, 23, &[], "hour")? {
            Field::Any => (0..24).collect(),
            Field::Set(s) => s,
        };
        let dom = parse_field(dom, 1, 31, &[], "day of month")?;
        let month = parse_field(month, 1, 12, &MONTHS, "month")?;
        // 7 is Sunday too, as in cron.
        let dow = match parse_field(dow, 0, 7, &DAYS, "weekday")? {
            Field::Set(s) => Field::Set(s.into_iter().map(|d| d % 7).collect()),
            Field::Any => Field::Any,
        };
        Ok(Cron {
            minute,
            hours,
            dom,
            month,
            dow,
        })
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hours = if self.hours.len() == 24 {
            "*".to_owned()
        } else {
            Field::Set(self.hours.clone()).text()
        };
        write!(
            f,
            "{} {hours} {} {} {}",
            self.minute,
            self.dom.text(),
            self.month.text(),
            self.dow.text()
        )
    }
}

impl Cron {
    /// Whether the schedule fires on `date` (cron's rule: with both day fields restricted,
    /// either may match).
    fn on(&self, date: Date) -> bool {
        let month = date.month() as u8;
        let dom = date.day() as u8;
        let dow = date.weekday().to_sunday_zero_offset() as u8;
        let day = match (&self.dom, &self.dow) {
            (Field::Any, _) | (_, Field::Any) => self.dom.contains(dom) && self.dow.contains(dow),
            _ => self.dom.contains(dom) || self.dow.contains(dow),
        };
        day && self.month.contains(month)
    }

    /// The local times (on days it fires) of the schedule, in order.
    fn times_on(&self, date: Date) -> impl Iterator<Item = DateTime> + '_ {
        let fires = self.on(date);
        self.hours
            .iter()
            .filter(move |_| fires)
            .map(move |h| date.at(*h as i8, self.minute as i8, 0, 0))
    }

    /// The schedule moved by `by` (whole minutes): what a CronJob must say to fire `by` after
    /// (or, negative, before) each start. Refused when no single schedule can say it: a move
    /// across midnight with a day of month or a month set, or one that takes some hours of a
    /// list to another day than the others.
    pub fn shifted(&self, by: SignedDuration) -> Result<Cron, String> {
        let minutes = by.as_secs().div_euclid(60);
        let mut hours = BTreeSet::new();
        let mut days = BTreeSet::new();
        let mut minute = 0;
        for h in &self.hours {
            let t = i64::from(*h) * 60 + i64::from(self.minute) + minutes;
            days.insert(t.div_euclid(1440));
            let at = t.rem_euclid(1440);
            hours.insert((at / 60) as u8);
            minute = (at % 60) as u8;
        }
        let day = match days.len() {
            1 => days.into_iter().next().unwrap_or_default(),
            _ => {
                return Err(format!(
                    "moved by {}, some of the hours {} fall on another day than the others",
                    friendly(by),
                    Field::Set(self.hours.clone()).text()
                ));
            }
        };
        let (dom, month, dow) = if day == 0 {
            (self.dom.clone(), self.month.clone(), self.dow.clone())
        } else {
            if self.dom != Field::Any || self.month != Field::Any {
                return Err(format!(
                    "moved by {}, the time crosses midnight, and with a day of month or a month set that is not one schedule",
                    friendly(by)
                ));
            }
            let dow = match &self.dow {
                Field::Any => Field::Any,
                Field::Set(s) => Field::Set(
                    s.iter()
                        .map(|d| (i64::from(*d) + day).rem_euclid(7) as u8)
                        .collect(),
                ),
            };
            (Field::Any, Field::Any, dow)
        };
        Ok(Cron {
            minute,
            hours,
            dom,
            month,
            dow,
        })
    }
}

/// When a window starts: every time a cron schedule fires, or once.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Cron(Cron),
    Once(DateTime),
}

/// A window of an environment file, checked and resolved.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub start: Start,
    pub duration: SignedDuration,
    pub lead: SignedDuration,
    pub zone_name: String,
    pub zone: TimeZone,
    pub min: u32,
    pub max: Option<u32>,
}

/// One occurrence of a window: the capacity is raised at `opens`, the clients are expected
/// from `starts`, the capacity goes back at `closes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub opens: Timestamp,
    pub starts: Timestamp,
    pub closes: Timestamp,
}

/// A problem with one key of a window: the key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
    pub hint: String,
}

fn problem(key: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        key,
        message: message.into(),
        hint: hint.into(),
    }
}

/// `1h30m` for a duration (whole minutes shown as such).
pub fn friendly(d: SignedDuration) -> String {
    let secs = d.as_secs().abs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

fn parse_local(text: &str) -> Result<DateTime, String> {
    text.trim().parse::<DateTime>().map_err(|_| {
        format!("{text:?} is not a local date and time like \"2026-12-24T18:00\" (no offset: the window's timeZone gives it)")
    })
}

/// How a local time reads in a zone: exists once, is skipped, or happens twice.
fn local_problem(zone: &TimeZone, zone_name: &str, dt: DateTime) -> Option<String> {
    match zone.to_ambiguous_zoned(dt).offset() {
        AmbiguousOffset::Unambiguous { .. } => None,
        AmbiguousOffset::Gap { before, after } => Some(format!(
            "{} does not exist in {zone_name} on {} (the clocks change from {before} to {after})",
            dt.time().strftime("%H:%M"),
            dt.date()
        )),
        AmbiguousOffset::Fold { before, after } => Some(format!(
            "{} happens twice in {zone_name} on {} (the clocks change from {before} to {after})",
            dt.time().strftime("%H:%M"),
            dt.date()
        )),
    }
}

impl Window {
    /// Checks a window of the file and resolves it; `committed` is the workload's
    /// `autoscaling` (min, max).
    pub fn resolve(w: &CapacityWindow, committed: (u32, u32)) -> Result<Window, Vec<Problem>> {
        let mut problems = Vec::new();
        let zone = match TimeZone::get(&w.time_zone) {
            Ok(z) => Some(z),
            Err(_) => {
                problems.push(problem(
                    "timeZone",
                    format!("{:?} is not an IANA time zone", w.time_zone),
                    "e.g. Asia/Tokyo, Europe/Berlin or UTC (as CronJob's timeZone)",
                ));
                None
            }
        };
        let start = match (&w.cron, &w.at) {
            (Some(c), None) => match c.parse::<Cron>() {
                Ok(c) => Some(Start::Cron(c)),
                Err(e) => {
                    problems.push(problem(
                        "cron",
                        e,
                        "e.g. \"0 11 * * wed\": 11:00 every Wednesday",
                    ));
                    None
                }
            },
            (None, Some(at)) => match parse_local(at) {
                Ok(dt) => Some(Start::Once(dt)),
                Err(e) => {
                    problems.push(problem("at", e, "e.g. at: \"2026-12-24T18:00\""));
                    None
                }
            },
            (Some(_), Some(_)) => {
                problems.push(problem(
                    "at",
                    "a window has `cron` (every time) or `at` (once), not both",
                    "drop one of them",
                ));
                None
            }
            (None, None) => {
                problems.push(problem(
                    "name",
                    "the window has no start",
                    "add cron: \"0 11 * * wed\" (every Wednesday 11:00) or at: \"2026-12-24T18:00\" (once)",
                ));
                None
            }
        };
        let duration = match (&w.duration, &w.until) {
            (Some(d), None) => match parse_duration(d) {
                Ok(d) if d.is_positive() => Some(d),
                Ok(_) => {
                    problems.push(problem(
                        "duration",
                        "the duration is not positive",
                        "e.g. 2h",
                    ));
                    None
                }
                Err(e) => {
                    problems.push(problem("duration", e, "e.g. 2h, 90m or 1h30m"));
                    None
                }
            },
            (None, Some(until)) => match (&start, parse_local(until)) {
                (Some(Start::Once(at)), Ok(end)) => match at.duration_until(end) {
                    d if d.is_positive() => Some(d),
                    _ => {
                        problems.push(problem(
                            "until",
                            format!("until {until:?} is not after at"),
                            "end the window after it starts",
                        ));
                        None
                    }
                },
                (Some(Start::Cron(_)), _) => {
                    problems.push(problem(
                        "until",
                        "a repeating window ends after a `duration`, not at a date",
                        "e.g. duration: 2h",
                    ));
                    None
                }
                (_, Err(e)) => {
                    problems.push(problem("until", e, "e.g. until: \"2026-12-24T22:00\""));
                    None
                }
                (None, _) => None,
            },
            (Some(_), Some(_)) => {
                problems.push(problem(
                    "until",
                    "a window has `duration` or `until`, not both",
                    "drop one of them",
                ));
                None
            }
            (None, None) => {
                problems.push(problem(
                    "name",
                    "the window has no end",
                    "add duration: 2h (or until: for a window with `at`)",
                ));
                None
            }
        };
        let lead = match &w.lead {
            None => Some(DEFAULT_LEAD),
            Some(text) => match parse_duration(text) {
                Ok(d) if !d.is_negative() => Some(d),
                Ok(_) => {
                    problems.push(problem("lead", "the lead time is negative", "e.g. 10m"));
                    None
                }
                Err(e) => {
                    problems.push(problem("lead", e, "e.g. 10m"));
                    None
                }
            },
        };
        if let (Some(d), Some(l)) = (duration, lead)
            && d < l
        {
            problems.push(problem(
                "duration",
                format!(
                    "the window lasts {} but its capacity is raised {} before it starts",
                    friendly(d),
                    friendly(l)
                ),
                "a window is at least as long as its lead time: lengthen it or shorten `lead`",
            ));
        }
        let (committed_min, committed_max) = committed;
        if w.min <= committed_min {
            problems.push(problem(
                "min",
                format!(
                    "min {} raises nothing: autoscaling.min is {committed_min}",
                    w.min
                ),
                format!("a window's min is above {committed_min}, or drop the window"),
            ));
        }
        if let Some(max) = w.max
            && max < w.min.max(committed_max)
        {
            problems.push(problem(
                "max",
                format!(
                    "max {max} is below {}",
                    if max < w.min {
                        format!("the window's min {}", w.min)
                    } else {
                        format!("autoscaling.max {committed_max}")
                    }
                ),
                "a window raises the bounds; drop max to keep autoscaling.max (raised to the window's min if below)",
            ));
        }
        let (Some(zone), Some(start), Some(duration), Some(lead)) = (zone, start, duration, lead)
        else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let window = Window {
            name: w.name.clone(),
            start,
            duration,
            lead,
            zone_name: w.time_zone.clone(),
            zone,
            min: w.min,
            max: w.max,
        };
        window.check_schedules()?;
        Ok(window)
    }

    /// The CronJob schedules of the window opening and closing must exist and must mean one
    /// instant on every day they fire: refused across a clock change.
    fn check_schedules(&self) -> Result<(), Vec<Problem>> {
        let key = match self.start {
            Start::Cron(_) => "cron",
            Start::Once(_) => "at",
        };
        let (up, down) = match (self.up_schedule(), self.down_schedule()) {
            (Ok(u), Ok(d)) => (u, d),
            (Err(e), _) => {
                return Err(vec![problem(
                    "lead",
                    format!("the capacity cannot be raised by one CronJob: {e}"),
                    "start the window at another time, or change `lead`",
                )]);
            }
            (_, Err(e)) => {
                return Err(vec![problem(
                    "duration",
                    format!("the window cannot be closed by one CronJob: {e}"),
                    "change `duration` so the end stays on the start's day",
                )]);
            }
        };
        if let Start::Once(at) = self.start {
            for (what, dt) in [
                ("opens", self.shift_local(at, -self.lead)),
                ("starts", Some(at)),
                ("closes", self.shift_local(at, self.duration)),
            ] {
                if let Some(why) = dt.and_then(|dt| local_problem(&self.zone, &self.zone_name, dt))
                {
                    return Err(vec![problem(
                        key,
                        format!("the window {what} at a time that {why}"),
                        "move it out of the clock change",
                    )]);
                }
            }
            return Ok(());
        }
        let today = Timestamp::now().to_zoned(self.zone.clone()).date();
        let mut fired = false;
        for (what, cron) in [("opens", &up), ("closes", &down)] {
            let mut date = today;
            for _ in 0..HORIZON_DAYS {
                for dt in cron.times_on(date) {
                    fired = true;
                    if let Some(why) = local_problem(&self.zone, &self.zone_name, dt) {
                        return Err(vec![problem(
                            key,
                            format!(
                                "the window {what} at a time that {why}: its CronJob would skip or repeat it that day"
                            ),
                            "move the start (and lead and duration) out of the hour the clocks change",
                        )]);
                    }
                }
                let Ok(next) = date.tomorrow() else { break };
                date = next;
            }
        }
        if !fired {
            return Err(vec![problem(
                key,
                "this schedule never fires in the next two years",
                "check the day and month fields",
            )]);
        }
        Ok(())
    }

    fn shift_local(&self, dt: DateTime, by: SignedDuration) -> Option<DateTime> {
        dt.checked_add(by).ok()
    }

    /// The CronJob schedule that raises the capacity: the start moved back by the lead time.
    pub fn up_schedule(&self) -> Result<Cron, String> {
        match &self.start {
            Start::Cron(c) => c.shifted(-self.lead),
            Start::Once(at) => once(self.shift_local(*at, -self.lead)),
        }
    }

    /// The CronJob schedule that lowers it again: the start moved by the duration.
    pub fn down_schedule(&self) -> Result<Cron, String> {
        match &self.start {
            Start::Cron(c) => c.shifted(self.duration),
            Start::Once(at) => once(self.shift_local(*at, self.duration)),
        }
    }

    /// The last instant of a window with `at`; `None` for a repeating one.
    pub fn ends(&self) -> Option<Timestamp> {
        match self.start {
            Start::Once(at) => self
                .zone
                .to_ambiguous_zoned(at)
                .compatible()
                .ok()
                .map(|z| z.timestamp() + self.duration),
            Start::Cron(_) => None,
        }
    }

    /// The first start after `after`, as the instant a CronJob in the window's zone fires.
    fn next_start(&self, after: Timestamp) -> Option<Timestamp> {
        let instant = |dt: DateTime| {
            self.zone
                .to_ambiguous_zoned(dt)
                .compatible()
                .ok()
                .map(|z| z.timestamp())
        };
        match &self.start {
            Start::Once(at) => instant(*at).filter(|t| *t > after),
            Start::Cron(c) => {
                let mut date = after.to_zoned(self.zone.clone()).date();
                for _ in 0..HORIZON_DAYS {
                    for dt in c.times_on(date) {
                        if let Some(t) = instant(dt)
                            && t > after
                        {
                            return Some(t);
                        }
                    }
                    date = date.tomorrow().ok()?;
                }
                None
            }
        }
    }

    fn occurrence(&self, starts: Timestamp) -> Occurrence {
        Occurrence {
            opens: starts - self.lead,
            starts,
            closes: starts + self.duration,
        }
    }

    /// The occurrence open at `now` (raised capacity from `opens` to `closes`), if any.
    pub fn open_at(&self, now: Timestamp) -> Option<Occurrence> {
        let starts = self.next_start(now - self.duration)?;
        let o = self.occurrence(starts);
        (o.opens <= now && now < o.closes).then_some(o)
    }

    /// The next `n` occurrences that close after `now`.
    pub fn upcoming(&self, now: Timestamp, n: usize) -> Vec<Occurrence> {
        let mut out = Vec::new();
        let mut after = now - self.duration;
        while out.len() < n {
            let Some(starts) = self.next_start(after) else {
                break;
            };
            out.push(self.occurrence(starts));
            after = starts;
        }
        out
    }

    /// The bounds while the window is open, from the committed ones.
    pub fn bounds(&self, committed: (u32, u32)) -> (u32, u32) {
        let min = self.min.max(committed.0);
        (min, self.max.unwrap_or(committed.1).max(min))
    }

    /// `HH:MM` in the window's zone, with the zone's abbreviation.
    pub fn local(&self, t: Timestamp) -> String {
        local_text(&t.to_zoned(self.zone.clone()))
    }
}

fn local_text(z: &Zoned) -> String {
    z.strftime("%Y-%m-%d %H:%M %Z").to_string()
}

/// The schedule of a CronJob that fires once a year at `dt`: what a one-off window's
/// CronJobs say (the first deploy after the window removes them).
fn once(dt: Option<DateTime>) -> Result<Cron, String> {
    let dt = dt.ok_or("the time is out of range")?;
    Ok(Cron {
        minute: dt.minute() as u8,
        hours: BTreeSet::from([dt.hour() as u8]),
        dom: Field::Set(BTreeSet::from([dt.day() as u8])),
        month: Field::Set(BTreeSet::from([dt.month() as u8])),
        dow: Field::Any,
    })
}

/// Two windows of one workload whose raised times overlap within the next two years (the
/// first such pair and when), or a window that overlaps its own next occurrence.
pub fn first_overlap(windows: &[Window], now: Timestamp) -> Option<(usize, usize, Timestamp)> {
    let horizon = now + SignedDuration::from_hours(24 * HORIZON_DAYS);
    let mut spans: Vec<(Timestamp, Timestamp, usize)> = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let mut after = now;
        while let Some(starts) = w.next_start(after) {
            if starts > horizon {
                break;
            }
            let o = w.occurrence(starts);
            spans.push((o.opens, o.closes, i));
            after = starts;
        }
    }
    spans.sort();
    spans
        .windows(2)
        .find(|pair| pair[1].0 < pair[0].1)
        .map(|pair| (pair[0].2, pair[1].2, pair[1].0))
}

/// An operator's raise (`infra-gen scale`), recorded in the cluster until it ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Override {
    pub min: u32,
    pub until: Timestamp,
    /// Who asked (the CI job URL, or the user), for `status`.
    #[serde(default)]
    pub by: String,
}

/// The HPA bounds in force, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub min: u32,
    pub max: u32,
    /// What raised them ("window maintenance-end until 2026-12-09 12:00 JST"); empty when the
    /// committed bounds are in force.
    pub why: Vec<String>,
}

/// The bounds in force at `now`: the committed ones, raised by an open window and by an
/// unexpired override.
pub fn in_force(
    committed: (u32, u32),
    windows: &[Window],
    scale: Option<&Override>,
    now: Timestamp,
) -> Capacity {
    let (mut min, mut max) = committed;
    let mut why = Vec::new();
    for w in windows {
        if let Some(o) = w.open_at(now) {
            let (wmin, wmax) = w.bounds(committed);
            min = min.max(wmin);
            max = max.max(wmax);
            why.push(format!(
                "window {} until {} (min {})",
                w.name,
                w.local(o.closes),
                w.min
            ));
        }
    }
    if let Some(s) = scale
        && now < s.until
    {
        min = min.max(s.min);
        max = max.max(s.min);
        why.push(format!(
            "scale --min {} until {}{}",
            s.min,
            s.until.strftime("%Y-%m-%d %H:%M UTC"),
            if s.by.is_empty() {
                String::new()
            } else {
                format!(" (by {})", s.by)
            }
        ));
    }
    Capacity { min, max, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(cron: &str, duration: &str, zone: &str, lead: Option<&str>) -> CapacityWindow {
        CapacityWindow {
            name: "maintenance-end".into(),
            cron: Some(cron.into()),
            at: None,
            duration: Some(duration.into()),
            until: None,
            time_zone: zone.into(),
            min: 20,
            max: None,
            lead: lead.map(str::to_owned),
        }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn cron_fields_parse_with_names_lists_ranges_and_steps() {
        let c: Cron = "0 9-17/4 * * mon-fri".parse().unwrap();
        assert_eq!(c.to_string(), "0 9,13,17 * * 1,2,3,4,5");
        let c: Cron = "30 3 1,15 jan,jul 7".parse().unwrap();
        assert_eq!(c.to_string(), "30 3 1,15 1,7 0");
        for bad in [
            "0 11 * *",
            "*/5 11 * * *",
            "0 24 * * *",
            "0 11 * * fri-mon",
            "@daily",
        ] {
            assert!(bad.parse::<Cron>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn a_lead_time_moves_the_schedule_back_across_midnight_and_the_weekday() {
        let c: Cron = "5 0 * * wed".parse().unwrap();
        let up = c.shifted(-SignedDuration::from_mins(10)).unwrap();
        assert_eq!(up.to_string(), "55 23 * * 2");
        let down = c.shifted(SignedDuration::from_hours(24 * 2)).unwrap();
        assert_eq!(down.to_string(), "5 0 * * 5");
        let monthly: Cron = "5 0 1 * *".parse().unwrap();
        assert!(monthly.shifted(-SignedDuration::from_mins(10)).is_err());
        assert_eq!(
            monthly
                .shifted(SignedDuration::from_hours(2))
                .unwrap()
                .to_string(),
            "5 2 1 * *"
        );
        let split: Cron = "0 0,12 * * *".parse().unwrap();
        assert!(split.shifted(-SignedDuration::from_mins(1)).is_err());
    }

    #[test]
    fn a_window_is_open_from_its_lead_time_until_its_end_in_its_zone() {
        // 11:00 JST every Wednesday, for two hours, raised 10 minutes before.
        let w = Window::resolve(
            &window("0 11 * * wed", "2h", "Asia/Tokyo", Some("10m")),
            (2, 10),
        )
        .unwrap();
        assert_eq!(w.up_schedule().unwrap().to_string(), "50 10 * * 3");
        assert_eq!(w.down_schedule().unwrap().to_string(), "0 13 * * 3");
        // 2026-12-09 is a Wednesday; 11:00 JST is 02:00 UTC.
        assert_eq!(w.open_at(ts("2026-12-09T01:49:00Z")), None);
        let o = w.open_at(ts("2026-12-09T01:50:00Z")).unwrap();
        assert_eq!(o.starts, ts("2026-12-09T02:00:00Z"));
        assert_eq!(o.closes, ts("2026-12-09T04:00:00Z"));
        assert!(w.open_at(ts("2026-12-09T03:59:59Z")).is_some());
        assert_eq!(w.open_at(ts("2026-12-09T04:00:00Z")), None);
        let next = w.upcoming(ts("2026-12-09T04:00:00Z"), 2);
        assert_eq!(next[0].starts, ts("2026-12-16T02:00:00Z"));
        assert_eq!(next[1].starts, ts("2026-12-23T02:00:00Z"));
        assert_eq!(w.local(o.closes), "2026-12-09 13:00 JST");
    }

    #[test]
    fn a_window_keeps_its_local_time_over_a_change_of_the_clocks() {
        // 09:00 Berlin every day: 08:00 UTC in winter, 07:00 UTC in summer.
        let w = Window::resolve(
            &window("0 9 * * *", "1h", "Europe/Berlin", Some("0s")),
            (2, 10),
        )
        .unwrap();
        assert_eq!(
            w.upcoming(ts("2027-03-27T12:00:00Z"), 2)
                .iter()
                .map(|o| o.starts)
                .collect::<Vec<_>>(),
            vec![ts("2027-03-28T07:00:00Z"), ts("2027-03-29T07:00:00Z")]
        );
        assert_eq!(
            w.upcoming(ts("2027-03-27T06:00:00Z"), 1)[0].starts,
            ts("2027-03-27T08:00:00Z")
        );
    }

    #[test]
    fn starts_in_the_hour_the_clocks_change_are_refused() {
        let skipped = Window::resolve(&window("30 2 * * *", "1h", "Europe/Berlin", None), (2, 10))
            .unwrap_err();
        assert_eq!(skipped[0].key, "cron");
        assert!(
            skipped[0]
                .message
                .contains("does not exist in Europe/Berlin"),
            "{skipped:?}"
        );
        let twice = Window::resolve(
            &window("30 1 * * sun", "1h", "America/New_York", Some("0s")),
            (2, 10),
        )
        .unwrap_err();
        assert!(twice[0].message.contains("happens twice"), "{twice:?}");
        // Tokyo has no clock change.
        assert!(Window::resolve(&window("30 2 * * *", "1h", "Asia/Tokyo", None), (2, 10)).is_ok());
    }

    #[test]
    fn bad_windows_name_the_key_and_the_fix() {
        let keys = |w: CapacityWindow| -> Vec<&'static str> {
            Window::resolve(&w, (2, 10))
                .unwrap_err()
                .into_iter()
                .map(|p| p.key)
                .collect()
        };
        assert_eq!(
            keys(window("0 11 * * wed", "2h", "Asia/Tokio", None)),
            ["timeZone"]
        );
        assert_eq!(
            keys(window("0 11 * * wed", "2 hours later", "UTC", None)),
            ["duration"]
        );
        assert_eq!(
            keys(window("0 11 * * wed", "5m", "UTC", Some("10m"))),
            ["duration"]
        );
        let mut low = window("0 11 * * wed", "2h", "UTC", None);
        low.min = 2;
        assert_eq!(keys(low), ["min"]);
        let mut inverted = window("0 11 * * wed", "2h", "UTC", None);
        inverted.max = Some(5);
        assert_eq!(keys(inverted), ["max"]);
        let mut both = window("0 11 * * wed", "2h", "UTC", None);
        both.at = Some("2026-12-24T18:00".into());
        assert_eq!(keys(both), ["at"]);
        assert_eq!(
            keys(window("0 0 1 * *", "2h", "UTC", Some("10m"))),
            ["lead"]
        );
        assert_eq!(keys(window("0 11 31 2 *", "2h", "UTC", None)), ["cron"]);
    }

    #[test]
    fn a_one_off_window_fires_on_its_date_and_ends() {
        let mut w = window("", "", "Asia/Tokyo", Some("15m"));
        w.cron = None;
        w.duration = None;
        w.at = Some("2026-12-24T18:00".into());
        w.until = Some("2026-12-24T22:30".into());
        let w = Window::resolve(&w, (2, 10)).unwrap();
        assert_eq!(w.up_schedule().unwrap().to_string(), "45 17 24 12 *");
        assert_eq!(w.down_schedule().unwrap().to_string(), "30 22 24 12 *");
        assert_eq!(w.ends(), Some(ts("2026-12-24T13:30:00Z")));
        assert!(w.open_at(ts("2026-12-24T08:45:00Z")).is_some());
        assert!(w.open_at(ts("2026-12-25T08:45:00Z")).is_none());
    }

    #[test]
    fn overlapping_windows_are_found_with_their_lead_times() {
        let a =
            Window::resolve(&window("0 11 * * wed", "2h", "Asia/Tokyo", None), (2, 10)).unwrap();
        let b =
            Window::resolve(&window("0 13 * * wed", "1h", "Asia/Tokyo", None), (2, 10)).unwrap();
        let c =
            Window::resolve(&window("10 13 * * wed", "1h", "Asia/Tokyo", None), (2, 10)).unwrap();
        let now = ts("2026-12-03T00:00:00Z");
        assert!(
            first_overlap(&[a.clone(), b.clone()], now).is_some(),
            "b opens 5 minutes early"
        );
        assert_eq!(first_overlap(&[a.clone(), c], now), None);
        // A daily window of 25 hours overlaps its own next occurrence.
        let daily_25h =
            Window::resolve(&window("0 11 * * *", "25h", "Asia/Tokyo", None), (2, 10)).unwrap();
        assert_eq!(
            first_overlap(&[daily_25h], now).map(|(a, b, _)| (a, b)),
            Some((0, 0))
        );
    }

    #[test]
    fn the_capacity_in_force_raises_and_says_why() {
        let w =
            Window::resolve(&window("0 11 * * wed", "2h", "Asia/Tokyo", None), (2, 10)).unwrap();
        let inside = ts("2026-12-09T02:30:00Z");
        let c = in_force((2, 10), std::slice::from_ref(&w), None, inside);
        assert_eq!((c.min, c.max), (20, 20));
        assert_eq!(
            c.why,
            ["window maintenance-end until 2026-12-09 13:00 JST (min 20)"]
        );
        let after = ts("2026-12-09T04:30:00Z");
        assert_eq!(
            in_force((2, 10), std::slice::from_ref(&w), None, after).min,
            2
        );
        let scale = Override {
            min: 30,
            until: ts("2026-12-09T05:00:00Z"),
            by: "ops".into(),
        };
        let c = in_force((2, 10), std::slice::from_ref(&w), Some(&scale), after);
        assert_eq!((c.min, c.max), (30, 30));
        assert!(c.why[0].starts_with("scale --min 30 until 2026-12-09 05:00 UTC"));
        let expired = ts("2026-12-09T05:00:00Z");
        assert_eq!(in_force((2, 10), &[w], Some(&scale), expired).min, 2);
    }

    #[test]
    fn durations_read_as_kubectl_users_write_them() {
        assert_eq!(
            parse_duration("1m30s").unwrap(),
            SignedDuration::from_secs(90)
        );
        assert_eq!(parse_duration("2h").unwrap(), SignedDuration::from_hours(2));
        assert_eq!(
            parse_duration("500ms").unwrap(),
            SignedDuration::from_millis(500)
        );
        assert_eq!(
            parse_duration("PT10M").unwrap(),
            SignedDuration::from_mins(10)
        );
        assert!(parse_duration("soon").is_err());
        assert_eq!(friendly(SignedDuration::from_secs(5400)), "1h30m");
    }
}

//! Time as rogue counts it: nanoseconds since the Unix epoch, UTC, always
//! the data's own time (packet timestamps, flow records' times), never the
//! time of processing, so a capture from last month is analysed as last
//! month. The store keeps milliseconds (bins in seconds).

/// Nanoseconds since the Unix epoch, UTC.
pub type Nanos = i64;
pub const NANOS_PER_SEC: Nanos = 1_000_000_000;
pub const MILLIS_PER_DAY: i64 = 86_400_000;

/// `time` in milliseconds (rounded down, also before 1970).
pub fn millis(time: Nanos) -> i64 {
    time.div_euclid(NANOS_PER_SEC / 1000)
}

/// `2015-12-08T21:31:02.855Z`: UTC, milliseconds truncated.
pub fn rfc3339_millis(time: Nanos) -> String {
    rfc3339_of_millis(time.div_euclid(1_000_000)).unwrap_or_else(|| format!("@{time}ns"))
}

/// [`rfc3339_millis`] of a time in milliseconds; None past jiff's range.
pub fn rfc3339_of_millis(millis: i64) -> Option<String> {
    // jiff's RFC 3339 printer (a third the cost of strftime's interpreter).
    jiff::Timestamp::from_millisecond(millis).ok().map(|ts| format!("{ts:.3}"))
}

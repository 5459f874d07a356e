//! Digits and symbols in a Chinese text, written out as they are read
//! aloud: 2026年12月1日 → 二零二六年十二月一日, 14:30 → 十四点三十分,
//! 100毫米 → 一百毫米, 3.5 → 三点五, 85% → 百分之八十五, -5℃ →
//! 零下五摄氏度, 5-10 → 五到十, a telephone number digit by digit (1 as
//! 幺). What is not a number passes through unchanged.

const DIGITS: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];

/// A whole number as it is read: 10 → 十, 105 → 一百零五, 2000 → 两千,
/// 20_000 → 两万, 1_0000_0000 → 一亿.
pub fn integer(n: u64) -> String {
    if n == 0 {
        return "零".into();
    }
    if n >= 1_0000_0000_0000_0000 {
        return digit_by_digit(&n.to_string(), false);
    }
    let sections = [
        (n / 1_0000_0000_0000 % 1_0000, "万亿"),
        (n / 1_0000_0000 % 1_0000, "亿"),
        (n / 1_0000 % 1_0000, "万"),
        (n % 1_0000, ""),
    ];
    let mut out = String::new();
    // A zero is read once between non-zero parts (一百零五, 一万零五百).
    let mut zero_pending = false;
    for (value, unit) in sections {
        if value == 0 {
            zero_pending |= !out.is_empty();
            continue;
        }
        if !out.is_empty() && (zero_pending || value < 1000) {
            out.push('零');
        }
        zero_pending = false;
        let first = out.is_empty();
        // 两 before 千, 万 and 亿 as the leading digit: 两千, 两万.
        if value == 2 && !unit.is_empty() {
            out.push('两');
        } else {
            out.push_str(&section(value, first));
        }
        out.push_str(unit);
    }
    out
}

/// A number below 10 000: the first section of the whole drops the 一 of
/// 一十 (十五, not 一十五) and reads 2000 as 两千.
fn section(v: u64, first: bool) -> String {
    let places = [
        (v / 1000, '千'),
        (v / 100 % 10, '百'),
        (v / 10 % 10, '十'),
        (v % 10, ' '),
    ];
    let mut out = String::new();
    let mut zero = false;
    let mut started = false;
    for (d, unit) in places {
        if d == 0 {
            zero |= started;
            continue;
        }
        if zero {
            out.push('零');
            zero = false;
        }
        let skip_one = first && !started && d == 1 && unit == '十';
        if unit == '千' && d == 2 && first {
            out.push('两');
        } else if !skip_one {
            out.push(DIGITS[d as usize]);
        }
        if unit != ' ' {
            out.push(unit);
        }
        started = true;
    }
    out
}

/// Digits read one by one (a year, a telephone number): 1 is 幺 when
/// `phone`, so it is not heard as 七.
pub fn digit_by_digit(digits: &str, phone: bool) -> String {
    digits
        .chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| {
            if phone && d == 1 {
                '幺'
            } else {
                DIGITS[d as usize]
            }
        })
        .collect()
}

/// A decimal as it is read: 12.5 → 十二点五, 0.05 → 零点零五.
fn decimal(int: &str, frac: &str) -> String {
    let whole = int
        .parse::<u64>()
        .map_or_else(|_| digit_by_digit(int, false), integer);
    if frac.is_empty() {
        return whole;
    }
    format!("{whole}点{}", digit_by_digit(frac, false))
}

/// Units read after a number, longest first.
const UNITS: &[(&str, &str)] = &[
    ("km/h", "公里每小时"),
    ("m/s", "米每秒"),
    ("℃", "摄氏度"),
    ("°C", "摄氏度"),
    ("mm", "毫米"),
    ("cm", "厘米"),
    ("km", "公里"),
    ("kg", "千克"),
    ("m", "米"),
    ("h", "小时"),
];

/// A run of digits at `i` with what follows it.
struct Scan<'a> {
    chars: &'a [char],
    i: usize,
}

impl Scan<'_> {
    fn digits(&mut self) -> String {
        let start = self.i;
        while self.i < self.chars.len() && self.chars[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.chars[start..self.i].iter().collect()
    }

    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn rest_starts_with(&self, s: &str) -> bool {
        let want: Vec<char> = s.chars().collect();
        self.chars.get(self.i..self.i + want.len()) == Some(&want[..])
    }

    /// Digits follow at `i + k`.
    fn digit_at(&self, k: usize) -> bool {
        self.peek(k).is_some_and(|c| c.is_ascii_digit())
    }
}

/// Writes out every number of `text` as it is read.
pub fn normalise(text: &str) -> String {
    // Full-width digits and signs as their ASCII forms first.
    let chars: Vec<char> = text
        .chars()
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            '％' => '%',
            '－' => '-',
            '．' => '.',
            _ => c,
        })
        .collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut s = Scan {
        chars: &chars,
        i: 0,
    };
    while s.i < chars.len() {
        let c = chars[s.i];
        let prev_digit = s.i > 0 && chars[s.i - 1].is_ascii_digit();
        // A minus sign before a number (not between two: that is a range).
        if c == '-' && !prev_digit && s.digit_at(1) {
            s.i += 1;
            let n = number(&mut s);
            if s.rest_starts_with("℃") || s.rest_starts_with("°C") {
                out.push_str("零下");
            } else {
                out.push('负');
            }
            out.push_str(&n);
            unit(&mut s, &mut out);
            continue;
        }
        if !c.is_ascii_digit() {
            out.push(c);
            s.i += 1;
            continue;
        }
        let start = s.i;
        let digits = s.digits();
        // Date: 2026-12-01.
        if digits.len() == 4 && s.peek(0) == Some('-') && s.digit_at(1) {
            let save = s.i;
            s.i += 1;
            let m = s.digits();
            if s.peek(0) == Some('-') && s.digit_at(1) && m.len() <= 2 {
                s.i += 1;
                let d = s.digits();
                out.push_str(&format!(
                    "{}年{}月{}日",
                    digit_by_digit(&digits, false),
                    integer(m.parse().unwrap_or(0)),
                    integer(d.parse().unwrap_or(0))
                ));
                continue;
            }
            s.i = save;
        }
        // A year: 2026年.
        if digits.len() >= 3 && s.peek(0) == Some('年') {
            out.push_str(&digit_by_digit(&digits, false));
            continue;
        }
        // A time of day: 14:30, 8:05:20.
        if digits.len() <= 2 && matches!(s.peek(0), Some(':' | '：')) && s.digit_at(1) {
            let save = s.i;
            s.i += 1;
            let m = s.digits();
            if m.len() == 2 {
                out.push_str(&time(&digits, &m, &mut s));
                continue;
            }
            s.i = save;
        }
        // A telephone or code: seven digits or more, or a leading zero,
        // with its dashes.
        if digits.len() >= 7 || (digits.len() >= 3 && digits.starts_with('0')) {
            out.push_str(&digit_by_digit(&digits, true));
            while s.peek(0) == Some('-') && s.digit_at(1) {
                s.i += 1;
                out.push_str(&digit_by_digit(&s.digits(), true));
            }
            continue;
        }
        s.i = start;
        let n = number(&mut s);
        if s.peek(0) == Some('%') {
            s.i += 1;
            out.push_str("百分之");
            out.push_str(&n);
            continue;
        }
        out.push_str(&n);
        // A range: 5-10, 3~5.
        if matches!(s.peek(0), Some('-' | '~' | '～')) && s.digit_at(1) {
            s.i += 1;
            out.push('到');
            let m = number(&mut s);
            out.push_str(&m);
        }
        unit(&mut s, &mut out);
    }
    out
}

/// A number (whole or decimal) at the scan's position, read.
fn number(s: &mut Scan<'_>) -> String {
    let int = s.digits();
    if s.peek(0) == Some('.') && s.digit_at(1) {
        s.i += 1;
        let frac = s.digits();
        return decimal(&int, &frac);
    }
    decimal(&int, "")
}

/// A time of day, its seconds if any: 14:30 → 十四点三十分, 8:05 →
/// 八点零五分, 9:00 → 九点.
fn time(h: &str, m: &str, s: &mut Scan<'_>) -> String {
    let hours = integer(h.parse().unwrap_or(0));
    let minutes: u64 = m.parse().unwrap_or(0);
    let mut out = format!("{hours}点");
    let seconds = if matches!(s.peek(0), Some(':' | '：')) && s.digit_at(1) {
        s.i += 1;
        s.digits().parse::<u64>().ok()
    } else {
        None
    };
    if minutes > 0 || seconds.is_some_and(|x| x > 0) {
        if minutes < 10 {
            out.push('零');
        }
        out.push_str(&integer(minutes));
        out.push('分');
    }
    if let Some(sec) = seconds.filter(|x| *x > 0) {
        out.push_str(&integer(sec));
        out.push('秒');
    }
    out
}

fn unit(s: &mut Scan<'_>, out: &mut String) {
    for (sym, read) in UNITS {
        if s.rest_starts_with(sym) {
            // A unit, not the start of a word (m in "mx").
            let after = s.peek(sym.chars().count());
            if after.is_some_and(|c| c.is_ascii_alphabetic()) {
                continue;
            }
            s.i += sym.chars().count();
            out.push_str(read);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_the_chinese_way() {
        for (n, read) in [
            (0, "零"),
            (7, "七"),
            (10, "十"),
            (15, "十五"),
            (20, "二十"),
            (105, "一百零五"),
            (110, "一百一十"),
            (200, "二百"),
            (1_005, "一千零五"),
            (2_000, "两千"),
            (2_026, "两千零二十六"),
            (10_000, "一万"),
            (20_000, "两万"),
            (10_500, "一万零五百"),
            (100_000, "十万"),
            (1_000_000, "一百万"),
            (100_000_000, "一亿"),
            (530_000, "五十三万"),
        ] {
            assert_eq!(integer(n), read, "{n}");
        }
    }

    #[test]
    fn dates_times_and_units_in_alert_text() {
        for (text, read) in [
            ("2026年12月1日14:30", "二零二六年十二月一日十四点三十分"),
            ("2026-12-01", "二零二六年十二月一日"),
            ("08:05", "八点零五分"),
            ("9:00", "九点"),
            ("23:59:30", "二十三点五十九分三十秒"),
            ("降雨量100mm", "降雨量一百毫米"),
            ("风速25m/s", "风速二十五米每秒"),
            ("气温-5℃", "气温零下五摄氏度"),
            ("湿度85%", "湿度百分之八十五"),
            ("3.5米", "三点五米"),
            ("5-10厘米", "五到十厘米"),
            ("电话0791-12345678", "电话零七九幺幺二三四五六七八"),
            ("12345678901", "幺二三四五六七八九零幺"),
            ("共3人", "共三人"),
        ] {
            assert_eq!(normalise(text), read, "{text}");
        }
    }
}

//! Chinese text to tone-numbered pinyin (zhong4 da4), the form espeak-ng's
//! `cmn-latn-pinyin` voice reads with the right syllables and tones.
//! Numbers are written out first (`numbers::normalise`); polyphonic
//! characters in words common in alerts are read by a lexicon (重大 zhong4,
//! 重新 chong2; 银行 hang2, 出行 xing2; 降雨 jiang4, 投降 xiang2…),
//! matched longest first; every other character by its most common
//! reading; 不 before a fourth tone becomes bu2.

use pinyin::ToPinyin;

/// Words whose reading the most common one of each character gets wrong.
/// Longest match wins; a word's syllables are space-separated.
const LEXICON: &[(&str, &str)] = &[
    // 重: zhong4 (heavy, severe) / chong2 (again)
    ("重大", "zhong4 da4"),
    ("严重", "yan2 zhong4"),
    ("重要", "zhong4 yao4"),
    ("重点", "zhong4 dian3"),
    ("重灾区", "zhong4 zai1 qu1"),
    ("重新", "chong2 xin1"),
    ("重复", "chong2 fu4"),
    ("重建", "chong2 jian4"),
    // 降: jiang4 (fall) / xiang2 (surrender)
    ("降雨", "jiang4 yu3"),
    ("降水", "jiang4 shui3"),
    ("降温", "jiang4 wen1"),
    ("降雪", "jiang4 xue3"),
    ("强降雨", "qiang2 jiang4 yu3"),
    ("投降", "tou2 xiang2"),
    // 量: liang4 (amount) / liang2 (measure)
    ("雨量", "yu3 liang4"),
    ("降雨量", "jiang4 yu3 liang4"),
    ("流量", "liu2 liang4"),
    ("数量", "shu4 liang4"),
    ("测量", "ce4 liang2"),
    // 行: xing2 (go) / hang2 (row, trade)
    ("银行", "yin2 hang2"),
    ("行业", "hang2 ye4"),
    ("出行", "chu1 xing2"),
    ("通行", "tong1 xing2"),
    ("行人", "xing2 ren2"),
    ("行驶", "xing2 shi3"),
    ("执行", "zhi2 xing2"),
    ("进行", "jin4 xing2"),
    ("步行", "bu4 xing2"),
    // 应: ying4 (respond) / ying1 (should)
    ("应急", "ying4 ji2"),
    ("响应", "xiang3 ying4"),
    ("供应", "gong1 ying4"),
    ("应对", "ying4 dui4"),
    ("应当", "ying1 dang1"),
    ("应该", "ying1 gai1"),
    // 转: zhuan3 (move) / zhuan4 (turn round)
    ("转移", "zhuan3 yi2"),
    ("转发", "zhuan3 fa1"),
    ("转告", "zhuan3 gao4"),
    // 处: chu3 (deal with) / chu4 (place)
    ("处理", "chu3 li3"),
    ("处置", "chu3 zhi4"),
    ("到处", "dao4 chu4"),
    ("管理处", "guan3 li3 chu4"),
    ("办事处", "ban4 shi4 chu4"),
    // 长: zhang3 (head of) / chang2 (long)
    ("镇长", "zhen4 zhang3"),
    ("村长", "cun1 zhang3"),
    ("县长", "xian4 zhang3"),
    ("区长", "qu1 zhang3"),
    ("家长", "jia1 zhang3"),
    ("增长", "zeng1 zhang3"),
    ("长江", "chang2 jiang1"),
    ("长期", "chang2 qi1"),
    // 地: di4 / de (adverbial)
    ("地区", "di4 qu1"),
    ("地点", "di4 dian3"),
    ("地带", "di4 dai4"),
    ("地震", "di4 zhen4"),
    ("及时地", "ji2 shi2 de5"),
    // 着: zhao2 / zhe
    ("着火", "zhao2 huo3"),
    ("沿着", "yan2 zhe5"),
    ("随着", "sui2 zhe5"),
    // 为: wei4 (for) / wei2 (be)
    ("为了", "wei4 le5"),
    ("因为", "yin1 wei4"),
    ("作为", "zuo4 wei2"),
    ("成为", "cheng2 wei2"),
    ("行为", "xing2 wei2"),
    ("认为", "ren4 wei2"),
    ("改为", "gai3 wei2"),
    ("定为", "ding4 wei2"),
    ("分为", "fen1 wei2"),
    ("视为", "shi4 wei2"),
    ("时间为", "shi2 jian1 wei2"),
    ("为期", "wei2 qi1"),
    ("为止", "wei2 zhi3"),
    // 调: tiao2 / diao4
    ("调整", "tiao2 zheng3"),
    ("调度", "diao4 du4"),
    ("调查", "diao4 cha2"),
    // 干: gan1 (dry) / gan4 (do)
    ("干旱", "gan1 han4"),
    ("干部", "gan4 bu4"),
    // 了: le / liao3
    ("了解", "liao3 jie3"),
    // 都: dou1 / du1
    ("首都", "shou3 du1"),
    // 发: fa1 / fa4
    ("头发", "tou2 fa4"),
    // 传: chuan2 / zhuan4
    ("传染", "chuan2 ran3"),
    ("传播", "chuan2 bo1"),
    // 便: bian4 / pian2
    ("便于", "bian4 yu2"),
    ("方便", "fang1 bian4"),
    // 还: hai2 / huan2
    ("还有", "hai2 you3"),
    ("归还", "gui1 huan2"),
    // 一 changes its tone before another syllable.
    ("一定", "yi2 ding4"),
    ("一律", "yi2 lv4"),
    ("一切", "yi2 qie4"),
    ("一旦", "yi2 dan4"),
    ("一带", "yi2 dai4"),
    ("一下", "yi2 xia4"),
    ("一些", "yi4 xie1"),
    ("一起", "yi4 qi3"),
    ("一般", "yi4 ban1"),
    ("一直", "yi4 zhi2"),
    ("一级", "yi1 ji2"),
    ("第一", "di4 yi1"),
    // 幺, as telephone numbers are read.
    ("幺", "yao1"),
];

/// Longest word in the lexicon, in characters.
const LONGEST: usize = 4;

/// One piece of what is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A syllable with its tone number (5: neutral), e.g. "zhong4".
    Syllable(String),
    /// A pause: a comma or a full stop.
    Pause { full: bool },
    /// Latin letters, read as they are.
    Latin(String),
}

fn lexicon(word: &str) -> Option<&'static str> {
    LEXICON.iter().find(|(w, _)| *w == word).map(|(_, r)| *r)
}

/// The tone number of a syllable ("zhong4" → 4; none → 5).
fn tone(s: &str) -> u8 {
    s.chars()
        .last()
        .and_then(|c| c.to_digit(10))
        .map_or(5, |d| d as u8)
}

/// `text` (numbers already written out) as syllables and pauses.
pub fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    // Where the character 不 was read (布 and 部 are bu4 too).
    let mut bu = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(reading) = (2..=LONGEST)
            .rev()
            .filter(|n| i + n <= chars.len())
            .find_map(|n| lexicon(&chars[i..i + n].iter().collect::<String>()).map(|r| (n, r)))
            .or_else(|| lexicon(&c.to_string()).map(|r| (1, r)))
        {
            let (n, r) = reading;
            out.extend(r.split(' ').map(|s| Token::Syllable(s.to_string())));
            i += n;
            continue;
        }
        match c {
            '，' | ',' | '、' | '；' | ';' | '：' | ':' => {
                out.push(Token::Pause { full: false })
            }
            '。' | '.' | '！' | '!' | '？' | '?' | '\n' => out.push(Token::Pause { full: true }),
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i + 1 < chars.len() && chars[i + 1].is_ascii_alphabetic() {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                out.push(Token::Latin(word.to_lowercase()));
            }
            c => {
                if let Some(p) = c.to_pinyin() {
                    let s = p.with_tone_num_end();
                    let s = if s.ends_with(|c: char| c.is_ascii_digit()) {
                        s.to_string()
                    } else {
                        format!("{s}5")
                    };
                    if c == '不' {
                        bu.push(out.len());
                    }
                    out.push(Token::Syllable(s.replace('ü', "v")));
                }
                // Anything else (spaces, symbols) is not read.
            }
        }
        i += 1;
    }
    sandhi(&mut out, &bu);
    out
}

/// 不 (at `bu`) before a fourth tone is read bu2 (不要 bu2 yao4, 不是
/// bu2 shi4).
fn sandhi(tokens: &mut [Token], bu: &[usize]) {
    for &i in bu {
        let next_fourth = matches!(tokens.get(i + 1), Some(Token::Syllable(s)) if tone(s) == 4);
        if let (true, Some(Token::Syllable(s))) = (next_fourth, tokens.get_mut(i)) {
            *s = "bu2".into();
        }
    }
}

/// The tokens as text espeak-ng's pinyin voice reads: syllables apart,
/// commas and full stops as pauses.
pub fn to_text(tokens: &[Token]) -> String {
    let mut out = String::new();
    for t in tokens {
        match t {
            Token::Syllable(s) | Token::Latin(s) => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
                out.push_str(s);
            }
            Token::Pause { full } => {
                while out.ends_with(' ') {
                    out.pop();
                }
                if !out.is_empty() && !out.ends_with(['.', ',']) {
                    out.push_str(if *full { ". " } else { ", " });
                }
            }
        }
    }
    out.trim_end().to_string()
}

/// Chinese text as tone-numbered pinyin, numbers read the Chinese way.
pub fn pinyin(text: &str) -> String {
    to_text(&tokens(&crate::numbers::normalise(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real alert sentences: numbers, dates, times, polyphones.
    #[test]
    fn alert_sentences_read_with_the_right_syllables_and_tones() {
        for (text, read) in [
            (
                "区气象台2026年12月1日14:30发布暴雨红色预警。",
                "qu1 qi4 xiang4 tai2 er4 ling2 er4 liu4 nian2 shi2 er4 yue4 yi1 ri4 \
                 shi2 si4 dian3 san1 shi2 fen1 fa1 bu4 bao4 yu3 hong2 se4 yu4 jing3.",
            ),
            (
                "请沿河低洼地带居民立即转移到安全地点！",
                "qing3 yan2 he2 di1 wa1 di4 dai4 ju1 min2 li4 ji2 zhuan3 yi2 dao4 an1 quan2 di4 dian3.",
            ),
            (
                "预计未来3小时降雨量将达100毫米以上",
                "yu4 ji4 wei4 lai2 san1 xiao3 shi2 jiang4 yu3 liang4 jiang1 da2 yi1 bai3 hao2 mi3 yi3 shang4",
            ),
            (
                "发生重大险情，请勿前往银行，不要出行。",
                "fa1 sheng1 zhong4 da4 xian3 qing2, qing3 wu4 qian2 wang3 yin2 hang2, bu2 yao4 chu1 xing2.",
            ),
            (
                "气温将降至-5℃，湿度85%",
                "qi4 wen1 jiang1 jiang4 zhi4 ling2 xia4 wu3 she4 shi4 du4, shi1 du4 bai3 fen1 zhi1 ba1 shi2 wu3",
            ),
            (
                "镇长提醒：应急咨询电话0791-12345678",
                "zhen4 zhang3 ti2 xing3, ying4 ji2 zi1 xun2 dian4 hua4 ling2 qi1 jiu3 yao1 yao1 er4 \
                 san1 si4 wu3 liu4 qi1 ba1",
            ),
            (
                "重新开放时间为08:00",
                "chong2 xin1 kai1 fang4 shi2 jian1 wei2 ba1 dian3",
            ),
        ] {
            let read: String = read.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(pinyin(text), read, "{text}");
        }
    }

    #[test]
    fn latin_letters_and_symbols_do_not_break_it() {
        assert_eq!(pinyin("PM2.5 超标"), "pm er4 dian3 wu3 chao1 biao1");
        assert_eq!(pinyin(""), "");
        assert_eq!(pinyin("。。，"), "");
        assert_eq!(pinyin("★★"), "");
    }
}

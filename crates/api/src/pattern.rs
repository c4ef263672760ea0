//! The service model's `pattern` constraints, matched as SageMaker matches them.
//!
//! SageMaker validates with `java.util.regex` and `Matcher.matches()`: the whole value
//! must match, and the Perl classes are ASCII-only (`\d` is `[0-9]`, `\s` six ASCII
//! blanks, `\w` `[a-zA-Z0-9_]`), while `.` stops at every Java line terminator. The
//! Rust engines make those classes Unicode-aware, so [`java_to_rust`] rewrites them
//! before compiling; otherwise `\d{12}` would accept Arabic-Indic digits in a role ARN
//! and `[\S]+` would refuse an em space that AWS accepts.
//!
//! One pattern in the model, `(?!\s*$).+`, opens with a lookahead, which the `regex`
//! crate cannot express; `fancy-regex` compiles it (and hands every pattern without
//! lookarounds to `regex` unchanged).

/// A compiled `pattern` constraint, keeping the model's text for error messages.
#[derive(Debug)]
pub(crate) struct Pattern {
    source: String,
    regex: fancy_regex::Regex,
}

impl Pattern {
    /// Compiles a service-model pattern with Java's meaning, anchored at both ends.
    pub(crate) fn new(source: &str) -> Result<Self, fancy_regex::Error> {
        let anchored = format!(r"\A(?:{})\z", java_to_rust(source));
        Ok(Pattern {
            source: source.to_string(),
            regex: fancy_regex::Regex::new(&anchored)?,
        })
    }

    /// The pattern as the service model writes it (and as AWS prints it).
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether the whole value matches. A value that exhausts fancy-regex's
    /// backtracking limit counts as not matching: refusing it is the safe answer.
    pub(crate) fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value).unwrap_or(false)
    }
}

/// Java's ASCII whitespace for `\s` (space, tab, newline, vertical tab, form feed, CR).
const JAVA_SPACE: &str = r"\t\n\x0B\x0C\r ";
/// Java's line terminators, which `.` does not match by default.
const JAVA_LINE_END: &str = r"\n\r\x{85}\x{2028}\x{2029}";

/// Rewrites a Java regex into Rust regex syntax with the same meaning for the
/// constructs the service model uses: the Perl classes, `.` and `$`. Everything else
/// (literals, escapes such as `\-` or `\/`, `\p{L}`, groups, repetitions, nested
/// classes) is written the same way in both dialects and is copied through.
pub(crate) fn java_to_rust(java: &str) -> String {
    let mut out = String::with_capacity(java.len() * 2);
    let mut chars = java.chars().peekable();
    // Depth of `[...]` nesting; Java and Rust both allow nested classes.
    let mut class_depth = 0usize;
    // True right after `[` or `[^`, where `]` is a literal in Java.
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let at_class_start = std::mem::take(&mut class_start);
        match c {
            '\\' => match chars.next() {
                Some(e) => out.push_str(&escape(e, class_depth > 0)),
                None => out.push('\\'),
            },
            '[' => {
                class_depth += 1;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
                class_start = true;
            }
            ']' if class_depth > 0 && at_class_start => out.push_str(r"\]"),
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(']');
            }
            '.' if class_depth == 0 => out.push_str(&format!("[^{JAVA_LINE_END}]")),
            // Java's `$` also matches before a line terminator that ends the input.
            '$' if class_depth == 0 => {
                out.push_str(&format!(r"(?:\r\n|[{JAVA_LINE_END}])?\z"));
            }
            _ => out.push(c),
        }
    }
    out
}

/// The Rust spelling of the Java escape `\<e>`, inside a class or outside one.
fn escape(e: char, in_class: bool) -> String {
    let (set, negated) = match e {
        'd' => ("0-9", false),
        'D' => ("0-9", true),
        's' => (JAVA_SPACE, false),
        'S' => (JAVA_SPACE, true),
        'w' => ("a-zA-Z0-9_", false),
        'W' => ("a-zA-Z0-9_", true),
        other => return format!("\\{other}"),
    };
    match (in_class, negated) {
        // Inside a class a positive set can be spliced in as it is.
        (true, false) => set.to_string(),
        // A negated set nests as its own class: `[\S\s]` -> `[[^...][...]]`.
        (_, true) => format!("[^{set}]"),
        (false, false) => format!("[{set}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Pattern {
        Pattern::new(src).unwrap()
    }

    #[test]
    fn whole_value_must_match() {
        let name = p("[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}");
        assert!(name.matches("llama-fp8"));
        assert!(name.matches("a--b"));
        assert!(!name.matches("bad_name"));
        assert!(!name.matches("-x"));
        assert!(!name.matches("x-"));
        assert!(!name.matches("ok name"));
        assert!(!name.matches(""));
        assert!(name.matches(&"a".repeat(63)));
        assert!(!name.matches(&"a".repeat(64)));
    }

    #[test]
    fn perl_classes_are_ascii_as_in_java() {
        let arn = p(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+");
        assert!(arn.matches("arn:aws:iam::123456789012:role/SageMakerRole"));
        // Arabic-Indic digits are \d to Unicode engines, not to Java.
        assert!(!arn.matches("arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/R"));
        let image = p(r"[\S]+");
        assert!(image.matches("763104351884.dkr.ecr.us-west-2.amazonaws.com/djl:0.31"));
        assert!(!image.matches("has space"));
        assert!(!image.matches("tab\there"));
        // An em space is not whitespace to Java's \S, so AWS accepts it.
        assert!(image.matches("a\u{2003}b"));
        let any = p(r"[\S\s]+");
        assert!(any.matches("two\nlines and spaces"));
        assert!(!any.matches(""));
        let word = p(r"[-\w]+\/.+");
        assert!(word.matches("my-image_1/tag"));
        assert!(!word.matches("é/tag"));
    }

    #[test]
    fn non_blank_lookahead_pattern() {
        let non_blank = p(r"(?!\s*$).+");
        assert!(non_blank.matches("OPTION_QUANTIZE"));
        assert!(non_blank.matches(" padded "));
        assert!(!non_blank.matches(""));
        assert!(!non_blank.matches("   "));
        assert!(!non_blank.matches(" \t "));
        // `.` stops at line terminators, so a value with a line break never matches.
        assert!(!non_blank.matches("a\nb"));
        assert!(!non_blank.matches("ab\n"));
        assert!(!non_blank.matches("a\u{2028}b"));
        // An ideographic space is not Java whitespace: not blank to AWS.
        assert!(non_blank.matches("\u{3000}"));
    }

    #[test]
    fn dot_and_dollar_follow_java() {
        assert!(p(".*").matches(""));
        assert!(p(".*").matches("token-123"));
        assert!(!p(".*").matches("a\rb"));
        assert!(p("a$").matches("a"));
        assert!(!p("[$]").matches("a"));
        assert!(p("[$.]+").matches("$.$"));
    }

    #[test]
    fn translation_keeps_other_syntax() {
        assert_eq!(
            java_to_rust(r"[\p{L}\p{Z}_.:/=+\-@]*"),
            r"[\p{L}\p{Z}_.:/=+\-@]*"
        );
        assert_eq!(java_to_rust(r"\d{12}"), "[0-9]{12}");
        assert_eq!(
            java_to_rust(r"[\S\s]"),
            r"[[^\t\n\x0B\x0C\r ]\t\n\x0B\x0C\r ]"
        );
        assert_eq!(java_to_rust(r"[]a]"), r"[\]a]");
        let tag = p(r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)");
        assert!(tag.matches("Team: ML/ops = 1 + é"));
        assert!(!tag.matches("bad!"));
    }
}

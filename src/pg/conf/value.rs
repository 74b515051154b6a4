//! Setting values as PostgreSQL reads them: units normalised to the setting's own (`1GB` of a kB setting
//! is 1048576), booleans in every spelling, enums case-insensitive, lists element by element, so two
//! spellings of one value compare equal. Pure.

/// The type of a setting, from `pg_settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingType {
    /// `bool`, `enum`, `integer`, `real` or `string`.
    pub vartype: String,
    /// The unit of `setting`: `s`, `ms`, `min`, `kB`, `8kB`, `MB`, ...
    pub unit: Option<String>,
    /// The values an enum takes.
    pub enumvals: Vec<String>,
    /// For a list of quoted elements, how its elements read.
    pub list: Option<ListKind>,
}

/// How the elements of a list setting read (PostgreSQL's `SplitIdentifierString` and
/// `SplitDirectoriesString`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Schema and tablespace names: an unquoted element folds to lowercase.
    Identifiers,
    /// Libraries and folders: kept as written.
    Names,
}

/// The settings PostgreSQL 15 reads as lists of quoted elements: `GUC_LIST_INPUT | GUC_LIST_QUOTE` in its
/// guc.c (guc_tables.c from 16), which is also what the server does (ALTER SYSTEM quotes each element of
/// exactly these). Given as one string, ALTER SYSTEM would store the whole list as one quoted element
/// (`'"a, b"'`), so they are written element by element.
pub const QUOTED_LISTS: [(&str, ListKind); 6] = [
    ("search_path", ListKind::Identifiers),
    ("temp_tablespaces", ListKind::Identifiers),
    ("shared_preload_libraries", ListKind::Names),
    ("session_preload_libraries", ListKind::Names),
    ("local_preload_libraries", ListKind::Names),
    ("unix_socket_directories", ListKind::Names),
];

impl ListKind {
    /// The list kind of the setting `name`, if it is one of [`QUOTED_LISTS`].
    pub fn of(name: &str) -> Option<ListKind> {
        QUOTED_LISTS
            .iter()
            .find(|(list, _)| *list == name)
            .map(|(_, kind)| *kind)
    }
}

/// The elements of a list value as PostgreSQL reads them: separated by commas, each trimmed; `"..."` is
/// one element as written (`""` in it is a quote), an unquoted one is read as `kind` says.
pub fn list_elements(value: &str, kind: ListKind) -> Result<Vec<String>, String> {
    let invalid = |why: &str| format!("`{value}` is not a valid list: {why}");
    let mut elements = Vec::new();
    let mut rest = value.trim_start();
    if rest.is_empty() {
        return Ok(elements);
    }
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut element = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                if c != '"' {
                    element.push(c);
                } else if quoted[at + 1..].starts_with('"') {
                    element.push('"');
                    chars.next();
                } else {
                    end = Some(at + 1);
                    break;
                }
            }
            let end = end.ok_or_else(|| invalid("a quote is not closed"))?;
            if element.is_empty() {
                return Err(invalid("an element is empty"));
            }
            elements.push(element);
            rest = quoted[end..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let element = rest[..end].trim_end();
            if element.is_empty() {
                return Err(invalid("an element is empty"));
            }
            if element.contains('"')
                || (kind == ListKind::Identifiers && element.contains(char::is_whitespace))
            {
                return Err(invalid("elements are separated by commas"));
            }
            elements.push(match kind {
                ListKind::Identifiers => element.to_ascii_lowercase(),
                ListKind::Names => element.to_owned(),
            });
            rest = &rest[end..];
        }
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start(),
            None if rest.is_empty() => return Ok(elements),
            None => return Err(invalid("elements are separated by commas")),
        }
    }
}

/// A value in the form `pg_settings.setting` has it, to compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Canonical {
    Text(String),
    Number(f64),
    List(Vec<String>),
}

impl Canonical {
    pub fn same(&self, other: &Canonical) -> bool {
        match (self, other) {
            (Canonical::Number(a), Canonical::Number(b)) => {
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            (a, b) => a == b,
        }
    }
}

/// `value` as `pg_settings.setting` would show it: booleans as on/off, enums lowercase, numbers in the
/// setting's own unit (`60s` for a setting in seconds is 60, `1GB` for one in 8kB blocks is 131072).
pub fn canonical(value: &str, ty: &SettingType) -> Result<Canonical, String> {
    match ty.vartype.as_str() {
        "bool" => parse_bool(value)
            .map(|b| Canonical::Text(if b { "on" } else { "off" }.into()))
            .ok_or_else(|| format!("`{value}` is not a boolean (on, off, true, false, yes, no)")),
        "enum" => {
            let lower = value.to_ascii_lowercase();
            if ty.enumvals.contains(&lower) {
                return Ok(Canonical::Text(lower));
            }
            let has = |v: &str| ty.enumvals.iter().any(|e| e == v);
            match parse_bool(value) {
                // Enums such as archive_mode also take the boolean spellings of on and off.
                Some(b) if has("on") && has("off") => {
                    Ok(Canonical::Text(if b { "on" } else { "off" }.into()))
                }
                _ => Err(format!(
                    "`{value}` is not one of {}",
                    ty.enumvals.join(", ")
                )),
            }
        }
        "integer" | "real" => {
            let number = number_in_unit(value, ty.unit.as_deref())?;
            Ok(Canonical::Number(if ty.vartype == "integer" {
                number.round()
            } else {
                number
            }))
        }
        _ => match ty.list {
            Some(kind) => list_elements(value, kind).map(Canonical::List),
            None => Ok(Canonical::Text(value.to_owned())),
        },
    }
}

/// PostgreSQL's booleans: on, off, true, false, yes, no, 1, 0, and unique prefixes, in any case.
fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(&v);
    if prefix_of("true", 1) || prefix_of("yes", 1) || v == "1" || v == "on" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || v == "0" || prefix_of("off", 2) {
        Some(false)
    } else {
        None
    }
}

/// The factor of a memory unit in bytes, or of a time unit in microseconds, and which it is.
fn unit_factor(unit: &str) -> Option<(bool, f64)> {
    let memory = |f: f64| Some((true, f));
    let time = |f: f64| Some((false, f));
    match unit {
        "B" => memory(1.0),
        "kB" => memory(1024.0),
        "MB" => memory(1024.0 * 1024.0),
        "GB" => memory(1024.0 * 1024.0 * 1024.0),
        "TB" => memory(1024.0 * 1024.0 * 1024.0 * 1024.0),
        "us" => time(1.0),
        "ms" => time(1e3),
        "s" => time(1e6),
        "min" => time(60e6),
        "h" => time(3600e6),
        "d" => time(86400e6),
        _ => None,
    }
}

/// `text` (a number, perhaps with a unit) in `base`, the setting's unit (`8kB` is 8 kB blocks).
fn number_in_unit(text: &str, base: Option<&str>) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, unit) = (text[..split].trim(), text[split..].trim());
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if unit.is_empty() {
        return Ok(number);
    }
    let units = "B, kB, MB, GB, TB for memory; us, ms, s, min, h, d for time";
    let Some(base) = base.filter(|b| !b.is_empty()) else {
        return Err(format!("`{text}`: this setting takes no unit"));
    };
    let digits = base
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(base.len());
    let multiple: f64 = if digits == 0 {
        1.0
    } else {
        base[..digits].parse().unwrap_or(1.0)
    };
    let (base_memory, base_factor) = unit_factor(&base[digits..])
        .ok_or_else(|| format!("the server reports an unknown unit `{base}`"))?;
    match unit_factor(unit) {
        Some((memory, factor)) if memory == base_memory => {
            Ok(number * factor / (multiple * base_factor))
        }
        _ => Err(format!(
            "`{text}` has an invalid unit: valid units are {units}"
        )),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::pg::conf) fn ty(
        vartype: &str,
        unit: Option<&str>,
        enumvals: &[&str],
    ) -> SettingType {
        SettingType {
            vartype: vartype.into(),
            unit: unit.map(Into::into),
            enumvals: enumvals.iter().map(|s| s.to_string()).collect(),
            list: None,
        }
    }

    fn number(value: &str, unit: Option<&str>) -> Result<f64, String> {
        match canonical(value, &ty("integer", unit, &[]))? {
            Canonical::Number(n) => Ok(n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_normalised_to_the_settings_unit() {
        assert_eq!(number("60s", Some("s")), Ok(60.0));
        assert_eq!(number("1min", Some("s")), Ok(60.0));
        assert_eq!(number("60", Some("s")), Ok(60.0));
        assert_eq!(number("1h", Some("min")), Ok(60.0));
        assert_eq!(number("1500ms", Some("s")), Ok(2.0), "integers round");
        assert_eq!(number("1GB", Some("8kB")), Ok(131072.0));
        assert_eq!(number("128MB", Some("8kB")), Ok(16384.0));
        assert_eq!(number("1GB", Some("MB")), Ok(1024.0));
        assert_eq!(number("-1", Some("ms")), Ok(-1.0));
        assert_eq!(number("10", None), Ok(10.0));
        assert!(number("10s", None).unwrap_err().contains("takes no unit"));
        assert!(
            number("1GB", Some("s"))
                .unwrap_err()
                .contains("invalid unit")
        );
        assert!(
            number("1 sec", Some("s"))
                .unwrap_err()
                .contains("invalid unit")
        );
        assert!(
            number("soon", Some("s"))
                .unwrap_err()
                .contains("not a number")
        );
        let real = canonical("0.9", &ty("real", None, &[])).unwrap();
        assert!(real.same(&Canonical::Number(0.9)));
    }

    #[test]
    fn booleans_and_enums() {
        let t = |v: &str| canonical(v, &ty("bool", None, &[]));
        for on in ["on", "ON", "true", "t", "yes", "y", "1"] {
            assert_eq!(t(on), Ok(Canonical::Text("on".into())), "{on}");
        }
        for off in ["off", "false", "f", "no", "0", "of"] {
            assert_eq!(t(off), Ok(Canonical::Text("off".into())), "{off}");
        }
        assert!(t("o").is_err() && t("maybe").is_err());
        let mode = ty("enum", None, &["always", "on", "off"]);
        assert_eq!(canonical("On", &mode), Ok(Canonical::Text("on".into())));
        assert_eq!(canonical("true", &mode), Ok(Canonical::Text("on".into())));
        let level = ty("enum", None, &["minimal", "replica", "logical"]);
        assert_eq!(
            canonical("archive", &level),
            Err("`archive` is not one of minimal, replica, logical".into())
        );
    }

    #[test]
    fn lists_compare_element_by_element_as_postgresql_reads_them() {
        let names = |v: &str| list_elements(v, ListKind::Names);
        let identifiers = |v: &str| list_elements(v, ListKind::Identifiers);
        let list = |items: &[&str]| Ok(items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            names("pg_stat_statements,auto_explain"),
            list(&["pg_stat_statements", "auto_explain"])
        );
        assert_eq!(
            names(" pg_stat_statements ,  auto_explain "),
            names("pg_stat_statements, auto_explain")
        );
        assert_eq!(
            names("'$libdir/x', \"My Lib\""),
            list(&["'$libdir/x'", "My Lib"])
        );
        assert_eq!(names(""), list(&[]));
        assert_eq!(
            identifiers("\"$user\", Public, \"Audit \"\"Log\"\"\""),
            list(&["$user", "public", "Audit \"Log\""])
        );
        for bad in ["a,", ",a", "a,,b", "\"a", "a \"b\"", "\"a\" b", "\"\""] {
            assert!(names(bad).is_err(), "{bad}");
        }
        assert!(identifiers("two words").is_err());
        assert_eq!(names("two words"), list(&["two words"]));

        let ty = SettingType {
            list: ListKind::of("shared_preload_libraries"),
            ..ty("string", None, &[])
        };
        let a = canonical("pg_stat_statements,auto_explain", &ty).unwrap();
        assert!(a.same(&canonical("pg_stat_statements, auto_explain", &ty).unwrap()));
        assert!(!a.same(&canonical("\"pg_stat_statements,auto_explain\"", &ty).unwrap()));
        assert_eq!(ListKind::of("search_path"), Some(ListKind::Identifiers));
        assert_eq!(ListKind::of("listen_addresses"), None);
    }
}

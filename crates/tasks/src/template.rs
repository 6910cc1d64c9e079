//! A run's values in a task file or a quick command: the cloud registry's
//! Go-template fields (`{{.Run.ID}}`, `{{.Run.Registry}}`, `{{.Run.Date}}`,
//! `{{.Run.Commit}}`, `{{.Run.Branch}}`, `{{.Values.name}}` from `--set`,
//! `{{.Secrets.id}}`) rendered by a real Go-template engine, then its
//! aliases (`$Registry`, `$ID`, `$Date`, `$Commit`, `$Branch`).
//!
//! A field nobody set is an error naming it, not an empty string: a tag
//! rendered as `app:` would push somewhere nobody meant. Secrets are only
//! given at run time, on the agent; a file is checked with them left out
//! (so their values never reach an error message sent to a client).

use std::collections::{BTreeMap, HashMap};

use gtmpl::Value;

use crate::error::SpecError;

/// The values one run renders its file and commands with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunValues {
    /// The run's id (`cf1`).
    pub id: String,
    /// The registry's login server (`registry.example:5000`): what an
    /// image reference starts with.
    pub registry: String,
    /// The registry's name.
    pub registry_name: String,
    /// UTC, `20261207-221530z`, as the cloud registry writes it.
    pub date: String,
    pub commit: String,
    pub branch: String,
    /// `--set name=value`.
    pub values: BTreeMap<String, String>,
    /// Secret values by the file's ids; empty while checking a file.
    pub secrets: BTreeMap<String, String>,
}

/// Fields of `.Run`.
const RUN_FIELDS: [&str; 6] = ["ID", "Registry", "RegistryName", "Date", "Commit", "Branch"];

fn object<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect::<HashMap<_, _>>(),
    )
}

impl RunValues {
    fn run_fields(&self) -> [(&str, &str); 6] {
        [
            ("ID", self.id.as_str()),
            ("Registry", self.registry.as_str()),
            ("RegistryName", self.registry_name.as_str()),
            ("Date", self.date.as_str()),
            ("Commit", self.commit.as_str()),
            ("Branch", self.branch.as_str()),
        ]
    }

    /// `text` with every template field and alias replaced.
    pub fn render(&self, text: &str) -> Result<String, SpecError> {
        let rendered = if text.contains("{{") {
            self.render_template(text)?
        } else {
            text.to_string()
        };
        Ok(self.replace_aliases(&rendered))
    }

    fn render_template(&self, text: &str) -> Result<String, SpecError> {
        let context = Value::Object(HashMap::from([
            ("Run".to_string(), object(self.run_fields())),
            (
                "Values".to_string(),
                object(self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
            (
                "Secrets".to_string(),
                object(self.secrets.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
        ]));
        let mut template = gtmpl::Template::default();
        template
            .parse(text)
            .map_err(|e| SpecError::Template(e.to_string()))?;
        template
            .render(&gtmpl::Context::from(context))
            .map_err(|e| match e {
                // Its message would print the object it looked in.
                gtmpl::error::ExecError::NoFiledFor(name, _)
                    if RUN_FIELDS.contains(&name.as_str()) =>
                {
                    SpecError::Template(format!(".Run.{name} has no value here"))
                }
                gtmpl::error::ExecError::NoFiledFor(name, _) => {
                    SpecError::MissingValue(format!(".Values.{name} (or .Secrets.{name})"), name)
                }
                other => SpecError::Template(other.to_string()),
            })
    }

    /// `$Registry`, `$ID`, … where the name ends the word (so `$IDX`
    /// and shell variables such as `$HOME` stay as they are).
    fn replace_aliases(&self, text: &str) -> String {
        let aliases = [
            ("Registry", self.registry.as_str()),
            ("ID", self.id.as_str()),
            ("Date", self.date.as_str()),
            ("Commit", self.commit.as_str()),
            ("Branch", self.branch.as_str()),
        ];
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let word_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            match aliases.iter().find(|(name, _)| *name == &after[..word_len]) {
                Some((name, value)) => {
                    out.push_str(value);
                    rest = &after[name.len()..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// The ids a text's templates read as `.Secrets.ID`, each once: what a
/// run must supply before the text renders.
pub fn secret_ids(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(".Secrets.") {
        let after = &rest[at + ".Secrets.".len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 {
            out.insert(after[..len].to_string());
        }
        rest = &after[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secrets_a_file_reads_are_found_before_it_renders() {
        let ids = secret_ids(
            "a: {{.Secrets.db_pw}}\nb: {{ .Secrets.token }} {{.Secrets.db_pw}}\nc: .Secrets.\n",
        );
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["db_pw", "token"]);
    }

    fn values() -> RunValues {
        RunValues {
            id: "cf1".into(),
            registry: "localhost:5000".into(),
            registry_name: "teamone".into(),
            date: "20261207-221530z".into(),
            commit: "0123abc".into(),
            branch: "main".into(),
            values: BTreeMap::from([("tag".to_string(), "v2".to_string())]),
            secrets: BTreeMap::new(),
        }
    }

    #[test]
    fn run_fields_values_and_aliases_are_rendered() {
        let v = values();
        assert_eq!(
            v.render("-t {{.Run.Registry}}/app:{{.Run.ID}} -t $Registry/app:{{.Values.tag}} .")
                .unwrap(),
            "-t localhost:5000/app:cf1 -t localhost:5000/app:v2 ."
        );
        assert_eq!(
            v.render("$Registry/hello-world:$ID built on $Branch at $Commit, $Date")
                .unwrap(),
            "localhost:5000/hello-world:cf1 built on main at 0123abc, 20261207-221530z"
        );
        assert_eq!(v.render("{{.Run.RegistryName}}").unwrap(), "teamone");
    }

    #[test]
    fn other_dollar_words_are_left_for_the_shell() {
        let v = values();
        assert_eq!(
            v.render("sh -c 'echo $HOME $IDX $Registry_x $ $'").unwrap(),
            "sh -c 'echo $HOME $IDX $Registry_x $ $'"
        );
    }

    #[test]
    fn a_value_nobody_set_is_an_error_naming_it() {
        let err = values().render("app:{{.Values.version}}").unwrap_err();
        assert_eq!(
            err,
            SpecError::MissingValue(
                ".Values.version (or .Secrets.version)".into(),
                "version".into()
            )
        );
        assert!(err.to_string().contains("--set version="));
        assert!(values().render("{{.Run.Nope}}").is_err());
        assert!(matches!(
            values().render("{{.Run.ID").unwrap_err(),
            SpecError::Template(_)
        ));
    }

    #[test]
    fn secrets_render_but_never_appear_in_an_error() {
        let mut v = values();
        v.secrets.insert("token".into(), "hunter2-secret".into());
        assert_eq!(v.render("{{.Secrets.token}}").unwrap(), "hunter2-secret");
        let err = v.render("{{.Secrets.other}}").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_whole_task_file_renders_then_parses() {
        let file = "
steps:
  - build: -t $Registry/app:{{.Run.ID}} -t $Registry/app:{{.Values.tag}} .
  - push: [\"$Registry/app:{{.Run.ID}}\"]
";
        let t = crate::TaskSpec::parse(&values().render(file).unwrap()).unwrap();
        assert_eq!(
            t.steps[1].action,
            crate::Action::Push(vec!["localhost:5000/app:cf1".into()])
        );
    }
}

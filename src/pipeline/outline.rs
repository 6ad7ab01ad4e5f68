//! The outline of a long-form answer, planned for the question before any
//! part is written (the approach of Stanford's STORM: an outline first, then
//! its sections). One short request asks the Editor for exactly N parts, each
//! a title and a one-line focus, constrained to `schema::outline(N)`; the
//! titles become the parts' headings and each part is written on its title
//! and focus. The original's parts for the content type (`detect::focus_area`)
//! stand in when the plan fails (the request failed, or its titles cannot be
//! used), for a story (its chapters follow the original's chapter plan: the
//! last one ends the story), and under `longform always` (the original's
//! behaviour exactly). Either way one line on stderr lists the parts.

use serde_json::{Map, Value};

use super::call::{call, Ctx};
use super::detect::{focus_area, ContentType};
use super::{prompts, schema};
use crate::report::{Outline, Section};
use crate::scheduler::Attribution;

/// The outline for an answer to `query` in `total` parts under the rule that
/// decided its size (`always`, `auto`, `!long`, …), and the planner's
/// attribution when it was asked.
pub(crate) async fn decide(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    total: usize,
    rule: &str,
) -> (Outline, Option<Attribution>) {
    let (outline, attribution) = if rule == "always" {
        let why = "`longform always`: the original's parts";
        (templates(ct, total, why), None)
    } else if ct == ContentType::Storytelling {
        let why = "a story follows the original's chapter plan";
        (templates(ct, total, why), None)
    } else {
        plan(ctx, query, ct, total).await
    };
    ctx.observer.notice(line(&outline, ct));
    (outline, attribution)
}

/// Ask the Editor for the outline; the templates when that fails. A plan
/// with some unusable titles keeps the usable ones when they are at least
/// half of the parts, the original's part standing in for each other one.
async fn plan(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    total: usize,
) -> (Outline, Option<Attribution>) {
    let fields = schema::outline(total);
    let prompt = prompts::outline(query, total, false);
    let editor = ctx.agent("Editor");
    match call(ctx, editor, "outline", prompt, &ctx.model, Some(&fields)).await {
        Ok(reply) => (
            merge(ct, total, read(&reply.fields, total)),
            Some(reply.attribution),
        ),
        Err(e) => {
            let why = format!(
                "the plan failed: {}",
                e.attempts
                    .last()
                    .map(|a| a.error.short())
                    .unwrap_or_else(|| e.stopped.to_string())
            );
            (templates(ct, total, why), None)
        }
    }
}

/// The planned parts, each usable one kept; the original's part in place of
/// each other one, or the original's outline when fewer than half are usable.
fn merge(
    ct: ContentType,
    total: usize,
    planned: Result<Vec<Result<Section, String>>, String>,
) -> Outline {
    let planned = match planned {
        Ok(p) => p,
        Err(why) => return templates(ct, total, format!("the plan could not be used: {why}")),
    };
    let problems: Vec<&String> = planned.iter().filter_map(|p| p.as_ref().err()).collect();
    if problems.is_empty() {
        return Outline {
            planned: true,
            fallback: None,
            parts: planned.into_iter().flatten().collect(),
        };
    }
    let joined = problems
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() * 2 > total {
        return templates(ct, total, format!("the plan could not be used: {joined}"));
    }
    let originals = templates(ct, total, "");
    let unused: Vec<String> = planned
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_err())
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    Outline {
        planned: true,
        fallback: Some(format!(
            "the original's part {} in place of what could not be used: {joined}",
            unused.join(", ")
        )),
        parts: planned
            .into_iter()
            .zip(originals.parts)
            .map(|(p, original)| p.unwrap_or(original))
            .collect(),
    }
}

/// The original's parts for `ct`, each headed by the first clause of its focus.
pub fn templates(ct: ContentType, total: usize, why: impl Into<String>) -> Outline {
    Outline {
        planned: false,
        fallback: Some(why.into()),
        parts: (1..=total)
            .map(|n| {
                let focus = focus_area(ct, n, total);
                Section {
                    title: heading(&focus),
                    focus,
                }
            })
            .collect(),
    }
}

/// The line that shows the outline.
fn line(o: &Outline, ct: ContentType) -> String {
    let titles: Vec<String> = o
        .parts
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {}", i + 1, s.title))
        .collect();
    let how = match (&o.fallback, o.planned) {
        (None, _) => "planned for the question".to_string(),
        (Some(why), true) => format!("planned for the question ({why})"),
        (Some(why), false) => format!("the original's {} parts ({why})", ct.as_str()),
    };
    format!("📋 Outline, {how}: {}", titles.join(" · "))
}

/// The planner's parts, each usable or why not (no list at all: why): a
/// title of a few words (numbering and Markdown taken off) that no earlier
/// part has; a missing focus is the title. Entries past `total` are dropped,
/// missing ones are unusable.
pub(crate) fn read(
    fields: &Map<String, Value>,
    total: usize,
) -> Result<Vec<Result<Section, String>>, String> {
    let list = fields
        .get("parts")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or("no list of parts")?;
    let mut parts: Vec<Result<Section, String>> = Vec::with_capacity(total);
    for n in 1..=total {
        let Some(entry) = list.get(n - 1) else {
            parts.push(Err(format!("part {n} is missing")));
            continue;
        };
        let text = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_str)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        let title = bare_title(&text("title"));
        let letters = title.chars().filter(|c| c.is_alphabetic()).count();
        let taken = |t: &str| {
            parts
                .iter()
                .flatten()
                .any(|p: &Section| p.title.eq_ignore_ascii_case(t))
        };
        let problem = if letters < 3 || title.contains('<') {
            Some(format!("part {n} has no usable title"))
        } else if title.chars().count() > schema::TITLE_CHARS.1 as usize {
            Some(format!("part {n}'s title is a paragraph"))
        } else if taken(&title) {
            Some(format!("part {n} repeats the title \"{title}\""))
        } else {
            None
        };
        if let Some(p) = problem {
            parts.push(Err(p));
            continue;
        }
        let focus = match text("focus") {
            f if f.chars().any(char::is_alphabetic) => f,
            _ => title.clone(),
        };
        parts.push(Ok(Section { title, focus }));
    }
    Ok(parts)
}

/// A title without the numbering, quotes and Markdown a model puts around it
/// ("## Part 2: Immune memory." → "Immune memory").
fn bare_title(t: &str) -> String {
    let mut t = t
        .trim()
        .trim_start_matches(['#', '*', '"', '\'', ' '])
        .trim_end_matches(['*', '"', '\'', ' ', '.']);
    for unit in ["part", "section", "chapter"] {
        let n = unit.len();
        if t.len() > n && t.is_char_boundary(n) && t[..n].eq_ignore_ascii_case(unit) {
            let rest = t[n..].trim_start();
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 {
                t = rest[digits..].trim_start_matches([':', '.', ')', '-', '–', ' ']);
            }
        }
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && t[digits..].starts_with(['.', ')', ':']) {
        t = t[digits + 1..].trim_start();
    }
    t.trim_matches(['#', '*', '"', '\'', ' ']).to_string()
}

/// A heading from a focus description: its first clause, capitalised.
pub(crate) fn heading(focus: &str) -> String {
    let end = focus.find([':', '.', ';']).unwrap_or(focus.len());
    let mut c = focus[..end].trim().chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(v: Value) -> Result<Vec<Section>, String> {
        let read = read(v.as_object().unwrap(), 3)?;
        read.into_iter().collect()
    }

    #[test]
    fn a_plan_becomes_titles_and_focus() {
        let p = parts(json!({"parts": [
            {"title": "How vaccines work", "focus": "Antigens and  the immune response."},
            {"title": "## Part 2: Immune memory.", "focus": ""},
            {"title": "3. **Vaccine safety**", "focus": "Trials and monitoring."}
        ]}))
        .unwrap();
        let titles: Vec<&str> = p.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(
            titles,
            ["How vaccines work", "Immune memory", "Vaccine safety"]
        );
        assert_eq!(p[0].focus, "Antigens and the immune response.");
        assert_eq!(p[1].focus, "Immune memory", "a missing focus is the title");
    }

    #[test]
    fn a_title_that_cannot_be_used_says_why() {
        let t = |title: &str| json!({"title": title, "focus": "f"});
        let err = |v: Value| parts(v).unwrap_err();
        assert_eq!(err(json!({"content": "text"})), "no list of parts");
        assert_eq!(
            err(json!({"parts": [t("A one"), t("B two")]})),
            "part 3 is missing"
        );
        assert_eq!(
            err(json!({"parts": [t("Vaccines"), t(" "), t("Safety")]})),
            "part 2 has no usable title"
        );
        assert_eq!(
            err(json!({"parts": [t("Vaccines"), t("<text>"), t("Safety")]})),
            "part 2 has no usable title"
        );
        assert_eq!(
            err(json!({"parts": [t("Vaccines"), t("vaccines"), t("Safety")]})),
            "part 2 repeats the title \"vaccines\""
        );
        let long = "word ".repeat(30);
        assert_eq!(
            err(json!({"parts": [t("Vaccines"), t(&long), t("Safety")]})),
            "part 2's title is a paragraph"
        );
    }

    #[test]
    fn a_plan_keeps_its_usable_titles_when_they_are_most_of_it() {
        let t = |title: &str| json!({"title": title, "focus": "f"});
        let plan = |v: Value| merge(ContentType::Research, 3, read(v.as_object().unwrap(), 3));
        let o = plan(json!({"parts": [t("Vaccines"), t("Immune memory"), t("vaccines")]}));
        assert!(o.planned);
        assert_eq!(o.parts[1].title, "Immune memory");
        assert_eq!(
            o.parts[2].title,
            heading(&focus_area(ContentType::Research, 3, 3))
        );
        assert_eq!(
            o.fallback.as_deref(),
            Some("the original's part 3 in place of what could not be used: part 3 repeats the title \"vaccines\"")
        );
        let o = plan(json!({"parts": [t("Vaccines"), t("vaccines"), t("VACCINES")]}));
        assert!(!o.planned);
        assert!(o
            .fallback
            .unwrap()
            .starts_with("the plan could not be used: part 2 repeats"));
        let o = plan(json!({"parts": [t("Vaccines"), t("Memory"), t("Safety")]}));
        assert!(o.planned && o.fallback.is_none());
    }

    #[test]
    fn the_templates_are_the_originals_parts() {
        let o = templates(ContentType::Research, 5, "why");
        assert!(!o.planned);
        assert_eq!(o.fallback.as_deref(), Some("why"));
        assert_eq!(o.parts.len(), 5);
        assert_eq!(o.parts[1].title, "Mathematical formalism, key equations and the theoretical mechanisms that make it work");
        assert_eq!(o.parts[1].focus, focus_area(ContentType::Research, 2, 5));
        let l = line(&o, ContentType::Research);
        assert!(
            l.starts_with("📋 Outline, the original's research parts (why): 1. Fundamental concepts and definitions only · 2. "),
            "{l}"
        );
    }
}

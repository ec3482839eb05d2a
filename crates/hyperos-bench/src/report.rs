//! docs/benchmarks.md is written by several benchmarks, each owning one
//! `## ` section: each replaces its own and keeps the others.

/// `old` with the section that starts at `heading` replaced by `section`
/// (which starts with the heading), or `section` appended if there is none.
/// A section ends where the next `## ` heading starts.
pub fn replace_section(old: &str, heading: &str, section: &str) -> String {
    let Some(start) = old.find(heading) else {
        let sep = match old {
            "" => "",
            _ if old.ends_with("\n\n") => "",
            _ if old.ends_with('\n') => "\n",
            _ => "\n\n",
        };
        return format!("{old}{sep}{section}");
    };
    let after = start + heading.len();
    let end = old[after..]
        .find("\n## ")
        .map_or(old.len(), |i| after + i + 1);
    let sep = if end < old.len() && !section.ends_with("\n\n") {
        "\n"
    } else {
        ""
    };
    format!("{}{section}{sep}{}", &old[..start], &old[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let old = "# B\n\n## A\n\na\n\n## Mine\n\nold\n\n## C\n\nc\n";
        let new = replace_section(old, "## Mine", "## Mine\n\nnew\n");
        assert_eq!(new, "# B\n\n## A\n\na\n\n## Mine\n\nnew\n\n## C\n\nc\n");
        let last = replace_section("# B\n\n## Mine\n\nold\n", "## Mine", "## Mine\n\nnew\n");
        assert_eq!(last, "# B\n\n## Mine\n\nnew\n");
        let appended = replace_section("# B\n", "## Mine", "## Mine\n\nnew\n");
        assert_eq!(appended, "# B\n\n## Mine\n\nnew\n");
    }
}

//! The source layout keeps data flowing one way: no module imports one that
//! imports it back, directly or through others (STYLE: no import circles).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module (`results::report`, `api::v2`, `engine`) → the modules its
/// file names as `crate::...` (the longest module path that is one). A
/// child's `super::` is its own room and not counted.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let texts: BTreeMap<String, String> = sources()
        .into_iter()
        .map(|(rel, text)| (rel.trim_end_matches(".rs").trim_end_matches("/mod").replace('/', "::"), text))
        .filter(|(module, _)| module != "lib" && module != "main")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &texts {
        let deps = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let path: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let target = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|candidate| texts.contains_key(candidate));
            if let Some(target) = target.filter(|t| t != module) {
                deps.insert(target);
            }
        }
    }
    graph
}

#[test]
fn no_import_circles_between_modules() {
    let graph = imports();
    assert!(graph.contains_key("engine") && graph.contains_key("config"), "read the source tree: {graph:?}");
    // Depth-first search from every module for a path back to it.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((module, path)) = stack.pop() {
            for dep in graph.get(&module).into_iter().flatten() {
                assert!(dep != start, "import circle: {} -> {start}", path.join(" -> "));
                if seen.insert(dep.clone()) {
                    stack.push((dep.clone(), [path.clone(), vec![dep.clone()]].concat()));
                }
            }
        }
    }
}

#[test]
fn the_engine_knows_neither_the_configuration_nor_an_api() {
    assert!(!imports()["engine"].contains("config"), "the engine takes engine::Settings, not the whole RunConfig");
    let engine = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    for entry in std::fs::read_dir(engine).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for api in ["v1::", "v2::", "ApiKind::"] {
            assert!(!text.contains(api), "{} names `{api}`: ask request::Signing or the api module", path.display());
        }
    }
}

/// Every source file under `src/`, as (path relative to `src/`, text).
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out
}

/// Rooms of one job each: no file grows into a fifth of the crate again
/// (input/mod.rs had 1,808 lines and eight jobs).
#[test]
fn no_source_file_is_over_600_lines() {
    const MOST: usize = 600;
    let files = sources();
    assert!(files.len() > 40, "read the source tree");
    let long: Vec<String> = files
        .iter()
        .filter(|(_, text)| text.lines().count() > MOST)
        .map(|(path, text)| format!("{path}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these into rooms of one job each: {long:?}");
}

/// Input knows no API: each API module declares its fields, checks and ids
/// (`input::field`'s vocabulary), and `input/` runs what was declared.
#[test]
fn input_names_no_api_module() {
    for (path, text) in sources().iter().filter(|(p, _)| p.starts_with("input")) {
        for api in ["v1::", "v2::", "api::v1", "api::v2", "ApiKind::V1", "ApiKind::V2"] {
            assert!(!text.contains(api), "{path} names `{api}`: declare it in the API's module instead");
        }
    }
    // And the APIs do declare themselves.
    for (path, text) in sources().iter().filter(|(p, _)| *p == "api/v1.rs" || *p == "api/v2.rs") {
        assert!(text.contains("pub static INPUT: ApiInput"), "{path} declares its input");
    }
}

/// lib.rs is the table of contents and the dispatch; each command has its
/// own file under commands/.
#[test]
fn each_command_has_its_own_file() {
    let files = sources();
    let lib = &files.iter().find(|(p, _)| p == "lib.rs").unwrap().1;
    assert!(lib.lines().count() < 80, "lib.rs is a table of contents: {} lines", lib.lines().count());
    for command in ["run", "dry_run", "check", "report", "simulate"] {
        let file = format!("commands/{command}.rs");
        assert!(files.iter().any(|(p, _)| *p == file), "{file} is missing");
    }
}

//! The source layout keeps data flowing one way: no module imports one that
//! imports it back, directly or through others (STYLE: no import circles).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module (`results::report`, `api::v2`, `engine`) → the modules its
/// file names as `crate::...` (the longest module path that is one). A
/// child's `super::` is its own room and not counted.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut texts = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            let module = rel.trim_end_matches(".rs").trim_end_matches("/mod").replace('/', "::");
            if module != "lib" && module != "main" {
                texts.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
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

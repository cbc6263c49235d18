//! `faasfuse inspect` on the example functions: every RPC site the sources
//! mark is found, with its callee and containing function, and no other;
//! the ELF facts match how each variant was built.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// `(callee, function)` pairs from `/* rpc-site: callee=X fn=SYMBOL */`
/// markers in the library's source file.
fn marked_sites(stem: &str) -> Vec<(String, String)> {
    let dir = repo().join("fixtures/functions");
    let src = ["c", "cc"]
        .iter()
        .map(|e| dir.join(format!("{stem}.{e}")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no source for lib{stem}.so"));
    let text = std::fs::read_to_string(src).unwrap();
    let mut out = Vec::new();
    for piece in text.split("rpc-site:").skip(1) {
        let mut callee = None;
        let mut func = None;
        for word in piece.split_whitespace().take(2) {
            if let Some(c) = word.strip_prefix("callee=") {
                callee = Some(c.to_string());
            }
            if let Some(f) = word.strip_prefix("fn=") {
                func = Some(f.to_string());
            }
        }
        out.push((callee.expect("marker callee="), func.expect("marker fn=")));
    }
    out.sort();
    out
}

fn inspect_json(lib: &Path) -> Value {
    let out = run_ok(faasfuse().arg("inspect").arg("--json").arg(lib));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn found_sites(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["rpc_sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let callee = match s["callee"]["kind"].as_str().unwrap() {
                "constant" => s["callee"]["name"].as_str().unwrap().to_string(),
                _ => "dynamic".to_string(),
            };
            (callee, s["function"].as_str().unwrap_or("?").to_string())
        })
        .collect();
    out.sort();
    out
}

fn libraries(variant: &str) -> Vec<std::path::PathBuf> {
    let mut libs: Vec<_> = std::fs::read_dir(fixtures().join(variant))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "so"))
        .collect();
    libs.sort();
    libs
}

fn stem(lib: &Path) -> String {
    let f = lib.file_name().unwrap().to_string_lossy();
    f.trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_string()
}

#[test]
fn finds_exactly_the_marked_rpc_sites_in_every_variant() {
    let mut total = 0;
    for variant in variants() {
        for lib in libraries(&variant) {
            let expected = marked_sites(&stem(&lib));
            let report = inspect_json(&lib);
            assert_eq!(
                found_sites(&report),
                expected,
                "{variant}/{}: RPC sites differ from the source markers",
                lib.display()
            );
            total += expected.len();
            let entry: Vec<bool> = report["entry_points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| !e["address"].is_null())
                .collect();
            assert_eq!(entry, vec![true; 4], "{}: ABI entry points", lib.display());
        }
    }
    assert!(total > 0, "the fixtures contain RPC sites");
}

#[test]
fn transport_site_of_the_cpp_service_is_dynamic() {
    let w = workflow("social");
    let lib = fixtures()
        .join("default")
        .join(&w.functions.iter().find(|(n, _)| *n == w.root).unwrap().1);
    let sites = found_sites(&inspect_json(&lib));
    assert!(!sites.is_empty());
    assert!(sites.iter().all(|(c, _)| c == "dynamic"), "{sites:?}");
}

#[test]
fn reports_elf_facts_of_each_variant() {
    let facts = |variant: &str| -> BTreeMap<String, Value> {
        libraries(variant)
            .iter()
            .map(|l| (stem(l), inspect_json(l)))
            .collect()
    };
    let default = facts("default");
    // A DT_NEEDED dependency on a system library.
    assert!(default.values().any(|r| r["needed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().starts_with("libz.so"))));
    // Thread-local data in at least two libraries.
    assert!(default.values().filter(|r| !r["tls"].is_null()).count() >= 2);
    // `helper` exported by at least two libraries.
    let exporting_helper = default
        .values()
        .filter(|r| {
            r["functions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == "helper" && f["exported"] == true)
        })
        .count();
    assert!(exporting_helper >= 2);
    for r in default.values() {
        assert_eq!(r["machine"], "x86-64");
        assert_eq!(r["pic"], true);
        assert_eq!(r["emit_relocs"], false);
    }
    let expect = |variant: &str, key: &str, pick: fn(&Value) -> bool| {
        assert!(
            variants().iter().any(|v| v == variant),
            "fixture variant {variant} was not built (scripts/build-fixtures.sh)"
        );
        for (lib, r) in facts(variant) {
            assert!(pick(&r), "{variant}/lib{lib}.so: expected {key}");
        }
    };
    expect("emit-relocs", "emit_relocs", |r| r["emit_relocs"] == true);
    // Landing pads in most functions; the IBT marking needs every linked
    // object (crt files included) to carry it, so it is not required.
    expect("cet", "endbr64 landing pads", |r| {
        r["endbr_functions"].as_u64().unwrap() * 2
            >= r["functions"].as_array().unwrap().len() as u64
    });
    expect("relr", "relr", |r| r["relr"] == true);
    expect("debug", "debug info", |r| r["debug_info"] == true);
}

#[test]
fn text_report_lists_sites_and_entry_points() {
    let lib = fixtures().join("default/libfoo.so");
    let out = run_ok(faasfuse().arg("inspect").arg(&lib));
    let text = String::from_utf8(out.stdout).unwrap();
    let n = marked_sites("foo").len();
    assert!(text.contains(&format!("RPC call sites ({n}):")), "{text}");
    assert!(text.contains("faas_func_call"));
    assert!(!text.contains("MISSING"));
}

/// C++ virtual calls with invoke-like arguments (the target read from the
/// vtable of the object in rdi) are not reported; the real RPC is.
#[test]
fn virtual_calls_are_not_rpc_sites() {
    let dir = scratch_dir("inspect-virtual");
    for (cxx, opt) in [("g++", "-O2"), ("g++", "-O1"), ("clang++-16", "-O2")] {
        let lib = dir.join(format!("libvirtual-{cxx}{opt}.so"));
        let o = std::process::Command::new(cxx)
            .args(["-shared", "-fPIC", opt, "-I"])
            .arg(repo().join("fixtures/include"))
            .arg(repo().join("tests/data/virtual.cc"))
            .arg("-o")
            .arg(&lib)
            .output()
            .unwrap_or_else(|e| panic!("{cxx} is not installed (CI installs clang-16): {e}"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report = inspect_json(&lib);
        assert_eq!(
            found_sites(&report),
            [("Bar".to_string(), "faas_func_call".to_string())],
            "{cxx} {opt}: {}",
            report["rpc_sites"]
        );
    }
}

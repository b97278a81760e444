//! Which files a playbook folder holds.

use std::os::unix::fs::symlink;

/// A Kubernetes ConfigMap volume: each key is a link to `..data/<key>`, `..data` a link to a
/// timestamped folder holding the files. Each playbook must be found once, by its own name.
#[test]
fn a_configmap_volume_yields_each_playbook_once_and_hidden_files_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let generation = root.join("..2026_11_23_18_00_00.123456789");
    std::fs::create_dir(&generation).expect("generation folder");
    for name in ["a.yaml", "b.yml"] {
        std::fs::write(generation.join(name), "name: x\n").expect("playbook");
    }
    symlink(&generation, root.join("..data")).expect("..data link");
    for name in ["a.yaml", "b.yml"] {
        symlink(root.join("..data").join(name), root.join(name)).expect("key link");
    }
    std::fs::create_dir(root.join("team")).expect("subfolder");
    std::fs::write(root.join("team/c.yaml"), "name: c\n").expect("playbook");
    std::fs::write(root.join("team/.c.yaml.swp"), "").expect("swap file");
    std::fs::write(root.join("team/.draft.yaml"), "name: draft\n").expect("hidden playbook");
    std::fs::write(root.join("notes.txt"), "").expect("other file");

    let found = playbook::files_in(root).expect("walk");
    let relative: Vec<_> = found
        .iter()
        .map(|path| path.strip_prefix(root).expect("inside").to_path_buf())
        .collect();
    assert_eq!(
        relative,
        ["a.yaml", "b.yml", "team/c.yaml"]
            .map(std::path::PathBuf::from)
            .to_vec()
    );
}

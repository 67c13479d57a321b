//! The configuration files shipped in `deploy/` parse and validate.

#[test]
fn the_example_config_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/quire.example.toml");
    let config =
        quire_node::config::Config::from_file(&path).expect("deploy/quire.example.toml parses");
    config
        .validate()
        .expect("deploy/quire.example.toml is valid");
    assert_eq!(
        config.node.data_dir,
        std::path::PathBuf::from("/var/lib/quire")
    );
}

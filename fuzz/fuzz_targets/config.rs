//! Any bytes as a configuration file: parsed or refused with one line,
//! never a panic; what parses prints as a config that parses and prints the
//! same (secrets print as `<redacted>`, so the printed forms are compared).
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use flowtel::config::FileConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = HashMap::from([("FUZZ_VAR".to_owned(), "10s".to_owned())]);
    match FileConfig::parse(Path::new("fuzz.yaml"), text, env.clone()) {
        Ok(config) => {
            let printed = config.to_yaml();
            let again = FileConfig::parse(Path::new("printed.yaml"), &printed, env)
                .unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
            assert_eq!(again.to_yaml(), printed);
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "not one line: {e}"),
    }
});

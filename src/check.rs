//! `flowtel check`: what this kernel supports, which probe set `run` would
//! use, which privileges are missing, and whether the programs pass the
//! kernel's verifier (they are loaded, never attached).

use std::fmt::Write as _;

use receiver::{FeatureState, HookSupport, ProbeSet};

/// The report and whether `flowtel run` would work.
pub struct Report {
    /// Lines for people, one fact each.
    pub text: String,
    /// Why `run` would fail, if it would.
    pub problem: Option<String>,
}

/// Checks the kernel and this process for `config`, whether each
/// configured OTLP endpoint answers, and whether the Kubernetes API server
/// of `kubernetes` does; with `all_programs`, loads every program of the
/// object through the verifier too.
pub fn check(
    config: &receiver::Config,
    exporters: &exporter::Config,
    names: &processor::Config,
    all_programs: bool,
) -> Report {
    let support = receiver::support(config);
    let mut text = String::new();
    let mut problems = Vec::new();
    let line = |text: &mut String, what: &str, value: &str| {
        let _ = writeln!(text, "{what:<13} {value}");
    };

    line(&mut text, "kernel", &support.kernel_release);
    line(
        &mut text,
        "BTF",
        if support.btf {
            "yes (/sys/kernel/btf/vmlinux)"
        } else {
            "missing"
        },
    );
    if !support.btf {
        problems.push("the kernel has no BTF (CONFIG_DEBUG_INFO_BTF)".to_owned());
    }
    if support.missing_capabilities.is_empty() {
        line(&mut text, "privileges", "ok");
    } else {
        let missing = support.missing_capabilities.join(", ");
        line(&mut text, "privileges", &format!("missing {missing}"));
        problems.push(format!("missing capabilities {missing}"));
    }
    match &support.cgroup_v2 {
        Ok(path) => line(&mut text, "cgroup v2", &path.display().to_string()),
        Err(error) => {
            line(&mut text, "cgroup v2", "not mounted");
            problems.push(error.to_string());
        }
    }
    line(
        &mut text,
        "namespaces",
        if receiver::may_enter_namespaces() {
            "every network namespace (CAP_SYS_ADMIN: setns)"
        } else {
            receiver::OWN_NAMESPACE_ONLY
        },
    );
    line(&mut text, "tracepoints", &hooks(&support.tracepoints));
    let kprobes = if support.kprobes_supported {
        hooks(&support.kprobe_functions)
    } else {
        "not supported by this kernel (CONFIG_KPROBES)".to_owned()
    };
    line(&mut text, "kprobes", &kprobes);

    if support.missing_capabilities.is_empty() && support.btf {
        match receiver::verify_programs(config) {
            Ok(verified) => {
                line(&mut text, "programs", &verdicts(&verified.verdicts));
                line(
                    &mut text,
                    "probe set",
                    &format!(
                        "{} (probes: {})",
                        probes_name(verified.probe_set),
                        probes_name(config.probes)
                    ),
                );
                text.push_str(&feature_table(&verified.features));
                if all_programs {
                    every_program(config, &mut text);
                }
            }
            Err(error) => {
                line(&mut text, "programs", &format!("refused: {error}"));
                problems.push(error.to_string());
            }
        }
    } else {
        line(
            &mut text,
            "programs",
            "not loaded (needs BTF and the privileges above)",
        );
    }

    match exporters.plan(&exporter::otlp::OtlpEnv::from_process().unwrap_or_default()) {
        Ok(plan) if plan.destinations.is_empty() => line(&mut text, "endpoint", "none configured"),
        Ok(plan) => {
            for destination in &plan.destinations {
                let shown = destination.shown_url();
                match answers(&destination.url) {
                    Ok(took) => {
                        line(
                            &mut text,
                            "endpoint",
                            &format!("{shown} answers (TCP connect in {took:?})"),
                        );
                        let (said, problem) = otlp_probe(destination);
                        line(&mut text, "otlp probe", &said);
                        problems.extend(problem);
                    }
                    Err(why) => {
                        line(
                            &mut text,
                            "endpoint",
                            &format!("{shown} does not answer: {why}"),
                        );
                        problems.push(format!("the OTLP endpoint {shown} does not answer: {why}"));
                    }
                }
            }
        }
        Err(error) => {
            line(&mut text, "endpoint", &format!("misconfigured: {error}"));
            problems.push(error.to_string());
        }
    }

    for said in container_runtimes(&names.containers) {
        line(&mut text, "containers", &said);
    }
    match &names.kubernetes {
        None => line(
            &mut text,
            "kubernetes",
            "not configured (processor.kubernetes)",
        ),
        Some(kubernetes) => {
            let (said, problem) = kubernetes_probe(kubernetes);
            line(&mut text, "kubernetes", &said);
            problems.extend(problem);
        }
    }

    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    let verdict = match &problem {
        None => "flowtel run would work".to_owned(),
        Some(problem) => format!("flowtel run would fail: {problem}"),
    };
    line(&mut text, "result", &verdict);
    Report { text, problem }
}

/// A runtime for one probe's requests (`check` itself is not async).
fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Whether each container runtime answers. Not a problem for `run` when
/// one does not: its containers are then unnamed.
fn container_runtimes(config: &containers::Config) -> Vec<String> {
    let runtime = match current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(error) => return vec![format!("not asked: no async runtime ({error})")],
    };
    let said = |what: String, asked: Result<usize, String>| match asked {
        Ok(n) => format!("{what} answers ({n} containers)"),
        Err(why) => {
            format!("{what} does not answer: {why} (its containers will have ids, no names)")
        }
    };
    let mut lines = Vec::new();
    if config.docker {
        let what = format!("Docker API at {}", config.docker_socket.display());
        let asked = runtime.block_on(containers::docker::probe(&config.docker_socket));
        lines.push(said(what, asked));
    }
    if config.containerd {
        let what = format!(
            "containerd API at {} (namespaces {})",
            config.containerd_socket.display(),
            config.containerd_namespaces.join(", ")
        );
        let asked = runtime.block_on(containers::containerd::probe(
            &config.containerd_socket,
            &config.containerd_namespaces,
        ));
        lines.push(said(what, asked));
    }
    if lines.is_empty() {
        lines.push("names off (processor.containers: docker and containerd false)".to_owned());
    }
    lines
}

/// `--all-programs`: a line for every program of the object, loaded on its
/// own, then which the verifier refused. A refused program no feature
/// needs here does not stop `run`: it is a fallback that would fail when
/// needed, which the kernel matrix checks for.
fn every_program(config: &receiver::Config, text: &mut String) {
    let verdicts = match receiver::verify_every_program(config) {
        Ok(verdicts) => verdicts,
        Err(error) => {
            let _ = writeln!(text, "all programs  not loaded: {error}");
            return;
        }
    };
    let _ = writeln!(text, "all programs");
    let mut refused = Vec::new();
    for (name, verdict) in &verdicts {
        let said = match verdict {
            receiver::Verdict::Passed => "passes".to_owned(),
            receiver::Verdict::NoHook(why) => format!("no hook here: {why}"),
            receiver::Verdict::Refused(why) => {
                refused.push(*name);
                format!("refused: {why}")
            }
        };
        let _ = writeln!(text, "  {name:<30} {said}");
    }
    let refused = if refused.is_empty() {
        "none".to_owned()
    } else {
        refused.join(", ")
    };
    let _ = writeln!(text, "refused       {refused} (of {})", verdicts.len());
}

/// How many programs the verifier took, and which it refused.
fn verdicts(verdicts: &[(&str, Result<(), String>)]) -> String {
    let refused: Vec<&str> = verdicts
        .iter()
        .filter(|(_, verdict)| verdict.is_err())
        .map(|(name, _)| *name)
        .collect();
    let passed = verdicts.len() - refused.len();
    if refused.is_empty() {
        format!("all {passed} tried pass the kernel verifier")
    } else {
        format!(
            "{passed} of {} tried pass the kernel verifier; refused: {}",
            verdicts.len(),
            refused.join(", ")
        )
    }
}

/// One line per feature: on (how), fallback (to what, and why), off (why,
/// and what is lost).
pub fn feature_table(features: &receiver::Features) -> String {
    let mut table = String::from("features\n");
    for (feature, state) in features.iter() {
        let (level, detail) = match state {
            FeatureState::On { via } => ("on", via.clone()),
            FeatureState::Fallback { via, why } => ("fallback", format!("{via} (because {why})")),
            FeatureState::Off { why } => ("off", format!("{why}; {}", feature.loss())),
        };
        let _ = writeln!(table, "  {:<22} {level:<9} {detail}", feature.name());
    }
    table
}

fn hooks(hooks: &[HookSupport]) -> String {
    hooks
        .iter()
        .map(|hook| format!("{} {}", hook.name, if hook.present { "yes" } else { "no" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configuration name of a probe set.
pub fn probes_name(set: ProbeSet) -> &'static str {
    match set {
        ProbeSet::Auto => "auto",
        ProbeSet::Tracepoint => "tracepoint",
        ProbeSet::Kprobe => "kprobe",
    }
}

/// Whether a TCP connection to the URL's host and port opens within 3 s.
fn answers(url: &str) -> Result<std::time::Duration, String> {
    use std::net::{TcpStream, ToSocketAddrs as _};
    let (scheme, _) = url.split_once("://").ok_or("not a URL")?;
    let authority = exporter::otlp::destination::host_port(url);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    let address = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target} has no address"))?;
    let started = std::time::Instant::now();
    TcpStream::connect_timeout(&address, std::time::Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// Asks the Kubernetes API server its version. One that does not answer
/// is said, not a problem (`run` starts and keeps retrying, its names
/// missing meanwhile); a client that cannot be made (no kubeconfig, a bad
/// one) is, since `run` would stop.
fn kubernetes_probe(config: &kubernetes::Config) -> (String, Option<String>) {
    let runtime = match current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(e) => return (format!("not asked: {e}"), None),
    };
    let asked = runtime.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), kubernetes::probe(config)).await
    });
    match asked {
        Ok(Ok(version)) => (format!("the API server answers: {version}"), None),
        Ok(Err(error @ kubernetes::Error::Unanswered { .. })) => (error.to_string(), None),
        Ok(Err(error)) => (format!("misconfigured: {error}"), Some(error.to_string())),
        Err(_) => (
            "the Kubernetes API server did not answer in 5s; names from it will be missing until it does".to_owned(),
            None,
        ),
    }
}

/// Sends the endpoint one empty export request: what it answered, and the
/// problem when the answer shows that no OTLP receiver is there. Other
/// failures (a refusal of the empty request, a timeout) are only said.
fn otlp_probe(destination: &exporter::otlp::Destination) -> (String, Option<String>) {
    use exporter::otlp::retry::{not_otlp_line, Attempt};
    let runtime = match current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(e) => return (format!("not sent: {e}"), None),
    };
    let attempt = runtime.block_on(exporter::otlp::transport::probe(
        destination,
        std::time::Duration::from_secs(3),
    ));
    match attempt {
        Attempt::Accepted { .. } => ("an empty export request was accepted".to_owned(), None),
        Attempt::NotOtlp { reason } => {
            let problem = format!("{}: {}", destination.shown_url(), not_otlp_line(&reason));
            (not_otlp_line(&reason), Some(problem))
        }
        Attempt::Retryable { reason, .. } | Attempt::Permanent { reason } => {
            (format!("an empty export request failed: {reason}"), None)
        }
    }
}

//! Generates the WorkflowService, OperatorService and grpc health server traits from the
//! descriptor set that `temporalio-protos` exports, reusing that crate's message types.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")
        .expect("temporalio-protos exports its descriptor set path");
    println!("cargo:rerun-if-changed={path}");
    let bytes = std::fs::read(&path)?;
    // The whole set, for tests that walk every request type (`DESCRIPTOR_SET`).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("temporal_descriptors.bin"), &bytes)?;
    let mut set = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    // Only the files that declare the services we serve; every message is an extern path.
    let wanted = [
        "temporal/api/workflowservice/v1/service.proto",
        "temporal/api/operatorservice/v1/service.proto",
        "health/v1/health.proto",
        "grpc/health/v1/health.proto",
    ];
    set.file.retain(|f| wanted.contains(&f.name()));
    assert!(
        set.file.len() >= 3,
        "service descriptors not found in {path}"
    );
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(true)
        // Its history goes out as the run cache's encoded events (kairos_core::wire).
        .extern_path(
            ".temporal.api.workflowservice.v1.PollWorkflowTaskQueueResponse",
            "::kairos_core::wire::PollWorkflowTaskAnswer",
        )
        .extern_path(".temporal", "::temporalio_protos::temporal")
        .extern_path(".grpc", "::temporalio_protos::grpc")
        .extern_path(".google.rpc", "::temporalio_protos::google::rpc")
        .compile_fds(set)?;
    name_unimplemented_rpcs()?;
    internal_service()
}

/// Kairos's own services (`proto/kairos/internal/v1/node.proto` between nodes,
/// `proto/kairos/cluster/v1/cluster.proto` for operators), parsed in-process (no `protoc`
/// needed).
fn internal_service() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "kairos/internal/v1/node.proto",
        "kairos/cluster/v1/cluster.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    let set = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(set)?;
    Ok(())
}

/// The generated default stubs answer a bare "Not yet implemented"; make each name its RPC, so a
/// client sees which call this server does not have yet.
fn name_unimplemented_rpcs() -> std::io::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for file in [
        "temporal.api.workflowservice.v1.rs",
        "temporal.api.operatorservice.v1.rs",
    ] {
        let path = out.join(file);
        let text = std::fs::read_to_string(&path)?;
        let mut result = String::with_capacity(text.len());
        let mut current_fn = String::new();
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("async fn ") {
                current_fn = rest.split('(').next().unwrap_or_default().to_string();
            }
            if line.contains("tonic::Status::unimplemented(\"Not yet implemented\")") {
                let rpc: String = current_fn
                    .split('_')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect();
                result.push_str(&line.replace(
                    "\"Not yet implemented\"",
                    &format!("\"{rpc} is not implemented by this server (Kairos) yet\""),
                ));
            } else {
                result.push_str(line);
            }
            result.push('\n');
        }
        std::fs::write(&path, result)?;
    }
    Ok(())
}

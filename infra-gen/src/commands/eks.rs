//! `infra-gen eks token` (a kubeconfig exec plugin) and `infra-gen eks kubeconfig`.

use crate::cli::{EksArgs, KubeconfigArgs};
use crate::eks;
use crate::error::{Error, Result};

/// Prints an ExecCredential.
pub async fn token(args: &EksArgs) -> Result<()> {
    let (token, expires) = eks::token(&args.cluster, &args.region).await?;
    crate::outln!("{}", eks::exec_credential(&token, expires));
    Ok(())
}

/// Writes a kubeconfig using `infra-gen eks token`.
pub async fn kubeconfig(args: &KubeconfigArgs) -> Result<()> {
    let access = eks::describe_cluster(&args.eks.cluster, &args.eks.region).await?;
    let me = std::env::current_exe()
        .map_err(|e| Error::Usage(format!("cannot find the infra-gen executable: {e}")))?;
    let document = eks::kubeconfig(
        &args.eks.cluster,
        &args.eks.region,
        &access,
        &me.to_string_lossy(),
    );
    let yaml = serde_saphyr::to_string(&document)
        .map_err(|e| Error::Usage(format!("cannot write the kubeconfig: {e}")))?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, yaml).map_err(|source| Error::Write {
                path: path.display().to_string(),
                source,
            })?;
            eprintln!(
                "wrote {} (context eks-{}-{})",
                path.display(),
                args.eks.region,
                args.eks.cluster
            );
        }
        None => crate::out!("{yaml}"),
    }
    Ok(())
}

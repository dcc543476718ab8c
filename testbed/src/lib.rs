//! The parts of a test cluster that cannot run here for real, shared by the end-to-end
//! tests and the `testbed` program: a node agent in place of the kubelet ([`node`], with the
//! container model of [`pod`]) and a stand-in for the AWS Load Balancer Controller on moto's
//! ELBv2 ([`lb`]), and, for the rehearsal on a real kubelet, the data plane of the load
//! balancer that stand-in configures ([`dataplane`]). Both run on a real kube-apiserver (the program) and, the model parts, inside
//! the in-repo API-server double of infra-gen's tests.

pub mod dataplane;
pub mod gateway;
pub mod kubectl;
pub mod lb;
pub mod node;
pub mod pod;

/// The ConfigMap in `kube-system` by which the `testbed` program tells tests what runs:
/// `node` (the node agent's node) and `moto` (the load-balancer stand-in's ELBv2 endpoint).
pub const ANNOUNCEMENT: &str = "testbed";

/// Now, as the API writes `Time` (RFC 3339, seconds), by the k8s-openapi serializer.
pub fn time_now() -> serde_json::Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap_or(serde_json::Value::Null)
}

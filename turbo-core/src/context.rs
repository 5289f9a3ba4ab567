//! What a custom work function gets to work with.

use std::sync::Arc;

use turbo_providers::{ApiRequest, ChatClient};

use crate::node::{NodeId, Provider};
use crate::result::{NodeOutput, RunResult};

/// The clients an engine holds, one per provider: a short list, searched on
/// every attempt (comparing a few names costs less than hashing one).
#[derive(Clone, Default)]
pub(crate) struct Clients {
    by_provider: Vec<(Provider, Arc<dyn ChatClient>)>,
}

impl Clients {
    pub(crate) fn get(&self, provider: Provider) -> Option<&Arc<dyn ChatClient>> {
        self.by_provider
            .iter()
            .find(|(held, _)| *held == provider)
            .map(|(_, client)| client)
    }

    /// Registers `client` for `provider`, replacing the one it had.
    pub(crate) fn set(&mut self, provider: Provider, client: Arc<dyn ChatClient>) {
        match self
            .by_provider
            .iter_mut()
            .find(|(held, _)| *held == provider)
        {
            Some((_, held)) => *held = client,
            None => self.by_provider.push((provider, client)),
        }
    }
}

/// A finished dependency of the node being run.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// The dependency's id.
    pub id: NodeId,
    /// Its placeholder key, if it has one.
    pub key: Option<Arc<str>>,
    /// Its output (dependencies always completed before a node runs).
    pub output: Arc<NodeOutput>,
}

/// The context handed to a custom work function: the engine's clients, the node's
/// own request, and the results of its dependencies.
#[derive(Clone)]
pub struct WorkContext {
    pub(crate) node: NodeId,
    pub(crate) provider: Provider,
    pub(crate) attempt: u32,
    pub(crate) request: Arc<ApiRequest>,
    pub(crate) clients: Clients,
    pub(crate) dependencies: Arc<[Dependency]>,
}

impl WorkContext {
    /// The id of the node being run.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The node's provider.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The node's request (with `{{key}}` placeholders already filled);
    /// [`ApiRequest::as_chat`] gives a chat request's messages.
    pub fn request(&self) -> &ApiRequest {
        &self.request
    }

    /// The Groq client, if the engine has one.
    pub fn groq(&self) -> Option<&Arc<dyn ChatClient>> {
        self.clients.get(Provider::Groq)
    }

    /// The OpenAI client, if the engine has one.
    pub fn openai(&self) -> Option<&Arc<dyn ChatClient>> {
        self.clients.get(Provider::OpenAi)
    }

    /// The client of any provider the engine has one for.
    pub fn client_for(&self, provider: Provider) -> Option<&Arc<dyn ChatClient>> {
        self.clients.get(provider)
    }

    /// The client of the node's own provider.
    pub fn client(&self) -> Option<&Arc<dyn ChatClient>> {
        self.clients.get(self.provider)
    }

    /// Every dependency, in the order they were given at push.
    pub fn dependencies(&self) -> &[Dependency] {
        &self.dependencies
    }

    /// The output of dependency `id`.
    pub fn dependency(&self, id: NodeId) -> Option<&Arc<NodeOutput>> {
        self.dependencies
            .iter()
            .find(|dep| dep.id == id)
            .map(|dep| &dep.output)
    }

    /// The output of the dependency with placeholder key `key`.
    pub fn dependency_by_key(&self, key: &str) -> Option<&Arc<NodeOutput>> {
        self.dependencies
            .iter()
            .find(|dep| dep.key.as_deref() == Some(key))
            .map(|dep| &dep.output)
    }

    /// Dependencies as [`RunResult`]s, for code written against the original's
    /// result shape.
    pub fn dependency_results(&self) -> impl Iterator<Item = (NodeId, RunResult)> + '_ {
        self.dependencies
            .iter()
            .map(|dep| (dep.id, Ok(dep.output.clone())))
    }
}

//! The workflow scheduler: the one loop that owns the runtime's
//! executions. It creates them (from an operator, a topic message, a
//! schedule tick), queues them past `maxActiveExecutions` or while their
//! workflow is paused, starts a driver per running execution, cancels,
//! retries failed ones, and resumes what a previous run left running.
//! [`Workflows`] is its handle: commands go to the loop, reads go to the
//! store (every transition is there before it takes effect).
//!
//! Ids: `<workflow>-<n>` by hand, `<workflow>-m<message id>` from a topic
//! message and `<workflow>-s<tick, unix seconds>` from a schedule, so a
//! redelivered message or a tick seen twice finds its execution instead of
//! creating another.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cortex_client::{ExecutionView, WorkflowPause};
use cortex_compiler::runtime_config::{RuntimeConfig, WorkflowEntry};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::broker::{Broker, Journal};
use crate::store::{Op, Store, StoredExecution, StoredTask};
use crate::workflow::consumer;
use crate::workflow::cron::Schedule;
use crate::workflow::driver::{Trigger, drive};
use crate::workflow::error::WorkflowError;
use crate::workflow::execution::{Execution, ExecutionState};
use crate::workflow::metrics::{Metered, WorkflowMetrics};
use crate::workflow::record::{StoreRecorder, recorded_tasks};
use crate::workflow::runner::ExecutionRunner;
use crate::workflow::view::{rfc3339, view};

/// Meta key prefix of paused workflows (`workflow.paused.<name>`).
const PAUSED: &str = "workflow.paused.";
/// Meta key prefix of the last tick each schedule ran
/// (`workflow.tick.<workflow>/<trigger>`, ms since the epoch).
const TICK: &str = "workflow.tick.";

type Reply<T> = oneshot::Sender<Result<T, WorkflowError>>;

/// Ends kept for a slow [`Workflows::ended`] receiver.
pub const ENDED_BACKLOG: usize = 65_536;

/// How an execution is started.
#[derive(Debug)]
pub enum Start {
    /// An operator, by hand (the workflow's manual trigger).
    Manual,
    /// A message on a topic one of its triggers names.
    Message {
        /// The topic.
        topic: String,
        /// The message's id (the execution's id derives from it).
        id: u64,
    },
}

enum Command {
    Start {
        workflow: String,
        how: Start,
        payload: Value,
        reply: Reply<ExecutionView>,
    },
    Cancel {
        id: String,
        reply: Reply<ExecutionView>,
    },
    Retry {
        id: String,
        reply: Reply<ExecutionView>,
    },
    Pause {
        workflow: String,
        paused: bool,
        reply: Reply<WorkflowPause>,
    },
    Reload {
        config: Arc<RuntimeConfig>,
        revision: u64,
    },
}

/// The handle on the workflow runtime.
#[derive(Clone)]
pub struct Workflows {
    commands: mpsc::Sender<Command>,
    store: Arc<dyn Store>,
    ended: broadcast::Sender<(String, ExecutionState)>,
    /// Its metrics.
    pub metrics: Arc<WorkflowMetrics>,
}

/// What the scheduler needs.
pub struct SchedulerOptions {
    /// Where executions are read from.
    pub store: Arc<dyn Store>,
    /// Where every change is written: the runtime's one group commit, so
    /// transitions of concurrent executions share a store write.
    pub journal: Journal,
    /// Where agent tasks send requests and topic triggers receive.
    pub broker: Arc<Broker>,
    /// The project directory (`run` tasks' working directory).
    pub project: PathBuf,
}

impl Workflows {
    /// Starts the scheduler on the applied `config` (revision `revision`):
    /// resumes the executions a previous run left running or queued, runs
    /// the ticks it missed, and serves commands until `shutdown`.
    pub async fn start(
        options: SchedulerOptions,
        config: Arc<RuntimeConfig>,
        revision: u64,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Workflows, JoinHandle<()>), WorkflowError> {
        let (commands, inbox) = mpsc::channel(256);
        let metrics = Arc::new(WorkflowMetrics::default());
        let handle = Workflows {
            commands,
            store: options.store.clone(),
            ended: broadcast::channel(ENDED_BACKLOG).0,
            metrics: metrics.clone(),
        };
        let paused = options
            .store
            .meta_prefix(PAUSED)
            .await?
            .into_iter()
            .map(|(k, _)| k[PAUSED.len()..].to_string())
            .collect();
        let mut scheduler = Scheduler {
            recorder: Arc::new(StoreRecorder::new(options.journal.clone())),
            store: options.store,
            journal: options.journal,
            broker: options.broker,
            project: options.project,
            handle: handle.clone(),
            metrics,
            workflows: BTreeMap::new(),
            revision,
            paused,
            running: HashMap::new(),
            queued: BTreeMap::new(),
            known: HashSet::new(),
            numbers: HashMap::new(),
            drivers: JoinSet::new(),
            driver_ids: HashMap::new(),
            cancel_waiters: HashMap::new(),
            schedules: Vec::new(),
            consumers: BTreeMap::new(),
            clock: Clock::new(),
            shutdown: shutdown.clone(),
        };
        scheduler.resume().await?;
        scheduler.reload(config, revision).await;
        let task = tokio::spawn(scheduler.run(inbox, shutdown));
        Ok((handle, task))
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, WorkflowError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| WorkflowError::Stopping)?;
        answer.await.map_err(|_| WorkflowError::Stopping)?
    }

    /// Starts an execution of `workflow` with `payload`; a redelivered
    /// message returns the execution it started the first time.
    pub async fn start_execution(
        &self,
        workflow: &str,
        how: Start,
        payload: Value,
    ) -> Result<ExecutionView, WorkflowError> {
        let workflow = workflow.to_string();
        self.ask(|reply| Command::Start {
            workflow,
            how,
            payload,
            reply,
        })
        .await
    }

    /// Cancels an execution; answers once it has stopped.
    pub async fn cancel(&self, id: &str) -> Result<ExecutionView, WorkflowError> {
        let id = id.to_string();
        self.ask(|reply| Command::Cancel { id, reply }).await
    }

    /// Runs a failed or cancelled execution again: succeeded tasks keep
    /// their outputs, the others run as new attempts.
    pub async fn retry(&self, id: &str) -> Result<ExecutionView, WorkflowError> {
        let id = id.to_string();
        self.ask(|reply| Command::Retry { id, reply }).await
    }

    /// Pauses (`true`) or resumes a workflow: paused, its triggers still
    /// record executions, as queued, and none starts.
    pub async fn pause(
        &self,
        workflow: &str,
        paused: bool,
    ) -> Result<WorkflowPause, WorkflowError> {
        let workflow = workflow.to_string();
        self.ask(|reply| Command::Pause {
            workflow,
            paused,
            reply,
        })
        .await
    }

    /// Takes a newly applied revision: new executions run its definitions
    /// (running ones finish on theirs).
    pub async fn reload(&self, config: Arc<RuntimeConfig>, revision: u64) {
        let _ = self
            .commands
            .send(Command::Reload { config, revision })
            .await;
    }

    /// The executions that end from now on, with how (a receiver that
    /// falls more than [`ENDED_BACKLOG`] behind misses the oldest).
    pub fn ended(&self) -> broadcast::Receiver<(String, ExecutionState)> {
        self.ended.subscribe()
    }

    /// Every execution (of `workflow`), oldest first.
    pub async fn list(&self, workflow: Option<&str>) -> Result<Vec<ExecutionView>, WorkflowError> {
        Ok(self
            .store
            .executions(workflow)
            .await?
            .iter()
            .map(view)
            .collect())
    }

    /// One execution.
    pub async fn get(&self, id: &str) -> Result<ExecutionView, WorkflowError> {
        find(&*self.store, id).await.map(|e| view(&e))
    }
}

/// The stored execution `id`.
async fn find(store: &dyn Store, id: &str) -> Result<StoredExecution, WorkflowError> {
    let workflow = workflow_of(id);
    store
        .executions(workflow)
        .await?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| WorkflowError::UnknownExecution(id.to_string()))
}

/// The workflow an execution id names (`<workflow>-<suffix>`), to narrow
/// the store read; `None` reads every workflow's.
fn workflow_of(id: &str) -> Option<&str> {
    id.rsplit_once('-')
        .map(|(w, _)| w)
        .filter(|w| !w.is_empty())
}

/// Wall time that moves with tokio's clock (so a paused clock in tests
/// moves schedules too).
struct Clock {
    wall_ms: u64,
    at: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            wall_ms: crate::store::now_ms(),
            at: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.wall_ms + self.at.elapsed().as_millis() as u64
    }

    fn instant(&self, ms: u64) -> Instant {
        self.at + std::time::Duration::from_millis(ms.saturating_sub(self.wall_ms))
    }
}

struct Running {
    workflow: String,
    cancel: watch::Sender<bool>,
}

struct Scheduler {
    store: Arc<dyn Store>,
    journal: Journal,
    broker: Arc<Broker>,
    project: PathBuf,
    recorder: Arc<StoreRecorder>,
    handle: Workflows,
    metrics: Arc<WorkflowMetrics>,
    /// The applied revision's workflows.
    workflows: BTreeMap<String, Arc<WorkflowEntry>>,
    revision: u64,
    paused: BTreeSet<String>,
    running: HashMap<String, Running>,
    /// Executions waiting to start, in creation order, by workflow.
    queued: BTreeMap<String, VecDeque<StoredExecution>>,
    /// Every execution id there is.
    known: HashSet<String>,
    /// The next number of a manual execution, by workflow.
    numbers: HashMap<String, u64>,
    drivers: JoinSet<(String, Result<ExecutionState, String>)>,
    driver_ids: HashMap<tokio::task::Id, String>,
    cancel_waiters: HashMap<String, Vec<Reply<ExecutionView>>>,
    schedules: Vec<Schedule>,
    consumers: BTreeMap<String, JoinHandle<()>>,
    clock: Clock,
    shutdown: watch::Receiver<bool>,
}

impl Scheduler {
    /// The loop: commands, drivers ending, schedule ticks, until shutdown.
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let tick = self.schedules.iter().map(|s| s.next_ms).min();
            let tick_at = tick.map(|ms| self.clock.instant(ms));
            tokio::select! {
                Some(command) = commands.recv() => self.command(command).await,
                Some(done) = self.drivers.join_next_with_id(), if !self.drivers.is_empty() => {
                    let (id, result) = match done {
                        Ok((task, done)) => {
                            self.driver_ids.remove(&task);
                            done
                        }
                        Err(e) => match self.driver_ids.remove(&e.id()) {
                            Some(id) => (id, Err(format!("its driver failed: {e}"))),
                            None => continue,
                        },
                    };
                    self.ended(id, result).await;
                }
                _ = tokio::time::sleep_until(tick_at.unwrap_or_else(Instant::now)), if tick_at.is_some() => {
                    self.tick().await;
                }
                _ = shutdown.changed() => break,
            }
        }
        // Executions stop where they are; the next start resumes them.
        self.drivers.abort_all();
        for (_, consumer) in std::mem::take(&mut self.consumers) {
            consumer.abort();
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Start {
                workflow,
                how,
                payload,
                reply,
            } => {
                let _ = reply.send(self.start(&workflow, how, payload).await);
            }
            Command::Cancel { id, reply } => self.cancel(id, reply).await,
            Command::Retry { id, reply } => {
                let _ = reply.send(self.retry(&id).await);
            }
            Command::Pause {
                workflow,
                paused,
                reply,
            } => {
                let _ = reply.send(self.pause(&workflow, paused).await);
            }
            Command::Reload { config, revision } => self.reload(config, revision).await,
        }
    }

    /// Picks up what a previous run left: running executions resume,
    /// queued ones wait again in order.
    async fn resume(&mut self) -> Result<(), WorkflowError> {
        let stored = self.store.executions(None).await?;
        for execution in stored {
            *self.numbers.entry(execution.workflow.clone()).or_insert(1) += 1;
            self.known.insert(execution.id.clone());
            match execution.state.as_str() {
                "running" => {
                    tracing::info!(execution = %execution.id, "resuming a workflow execution");
                    self.launch(execution);
                }
                "queued" => self
                    .queued
                    .entry(execution.workflow.clone())
                    .or_default()
                    .push_back(execution),
                _ => {}
            }
        }
        Ok(())
    }

    async fn reload(&mut self, config: Arc<RuntimeConfig>, revision: u64) {
        self.revision = revision;
        self.workflows = config
            .workflows
            .iter()
            .map(|(name, w)| (name.clone(), Arc::new(w.clone())))
            .collect();
        // Topic triggers: one consumer per workflow that has any.
        let topical: BTreeSet<String> = self
            .workflows
            .iter()
            .filter(|(_, w)| w.triggers.iter().any(|t| t.topic.is_some()))
            .map(|(name, _)| name.clone())
            .collect();
        self.consumers.retain(|name, task| {
            let keep = topical.contains(name) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for name in topical {
            if !self.consumers.contains_key(&name) {
                let task = tokio::spawn(consumer::consume(
                    self.handle.clone(),
                    self.broker.clone(),
                    name.clone(),
                    self.shutdown.clone(),
                ));
                self.consumers.insert(name, task);
            }
        }
        self.load_schedules().await;
        let names: Vec<String> = self.queued.keys().cloned().collect();
        for workflow in names {
            self.fill(&workflow).await;
        }
    }

    /// The schedules of the applied workflows; a tick missed while the
    /// runtime was down runs now, once.
    async fn load_schedules(&mut self) {
        let now = self.clock.now_ms();
        let mut schedules = Vec::new();
        for (name, workflow) in &self.workflows {
            for trigger in &workflow.triggers {
                let Some(expression) = &trigger.schedule else {
                    continue;
                };
                match Schedule::new(name, &trigger.name, expression, now) {
                    Ok(s) => schedules.push(s),
                    Err(e) => {
                        tracing::error!(workflow = %name, trigger = %trigger.name, error = %e, "schedule not started")
                    }
                }
            }
        }
        let mut missed = Vec::new();
        for s in &schedules {
            let key = format!("{TICK}{}/{}", s.workflow, s.trigger);
            match self.store.meta(&key).await {
                Ok(Some(last)) => {
                    let last: u64 = last.parse().unwrap_or(now);
                    if let Some(tick) = s.missed(last, now) {
                        missed.push((s.workflow.clone(), s.trigger.clone(), tick));
                    }
                }
                // First seen: no backfill; ticks from now on.
                Ok(None) => {
                    let _ = self
                        .journal
                        .submit(vec![Op::Meta {
                            key,
                            value: Some(now.to_string()),
                        }])
                        .wait()
                        .await;
                }
                Err(e) => tracing::error!(error = %e, "cannot read a schedule's last tick"),
            }
        }
        self.schedules = schedules;
        for (workflow, trigger, tick) in missed {
            tracing::info!(workflow = %workflow, trigger = %trigger, tick = %rfc3339(tick), "running a tick missed while the runtime was down");
            self.run_tick(&workflow, &trigger, tick).await;
        }
    }

    /// Runs every schedule whose tick is due.
    async fn tick(&mut self) {
        let now = self.clock.now_ms();
        let due: Vec<(String, String, u64)> = self
            .schedules
            .iter_mut()
            .filter(|s| s.next_ms <= now)
            .map(|s| {
                let tick = s.next_ms;
                s.next_ms = s.after(tick.max(now));
                (s.workflow.clone(), s.trigger.clone(), tick)
            })
            .collect();
        for (workflow, trigger, tick) in due {
            self.run_tick(&workflow, &trigger, tick).await;
        }
    }

    async fn run_tick(&mut self, workflow: &str, trigger: &str, tick: u64) {
        let id = format!("{workflow}-s{}", tick / 1000);
        let payload = json!({ "scheduledAt": rfc3339(tick) });
        if let Err(e) = self.create(workflow, trigger, id, payload).await {
            tracing::error!(workflow = %workflow, trigger = %trigger, error = %e, "a scheduled execution was not created");
            return;
        }
        let _ = self
            .journal
            .submit(vec![Op::Meta {
                key: format!("{TICK}{workflow}/{trigger}"),
                value: Some(tick.to_string()),
            }])
            .wait()
            .await;
    }

    fn definition(&self, workflow: &str) -> Result<Arc<WorkflowEntry>, WorkflowError> {
        self.workflows
            .get(workflow)
            .cloned()
            .ok_or_else(|| WorkflowError::UnknownWorkflow {
                name: workflow.to_string(),
                known: self.workflows.keys().cloned().collect(),
            })
    }

    async fn start(
        &mut self,
        workflow: &str,
        how: Start,
        payload: Value,
    ) -> Result<ExecutionView, WorkflowError> {
        let definition = self.definition(workflow)?;
        let (trigger, id) = match how {
            Start::Manual => {
                let trigger = definition
                    .triggers
                    .iter()
                    .find(|t| t.manual.is_some())
                    .ok_or_else(|| WorkflowError::NoManualTrigger(workflow.to_string()))?;
                let next = self.numbers.entry(workflow.to_string()).or_insert(1);
                let mut n = *next;
                while self.known.contains(&format!("{workflow}-{n}")) {
                    n += 1;
                }
                *next = n + 1;
                (trigger.name.clone(), format!("{workflow}-{n}"))
            }
            Start::Message { topic, id } => {
                let trigger = definition
                    .triggers
                    .iter()
                    .find(|t| t.topic.as_deref() == Some(topic.as_str()))
                    .map_or_else(|| topic.clone(), |t| t.name.clone());
                (trigger, format!("{workflow}-m{id}"))
            }
        };
        self.create(workflow, &trigger, id, payload).await
    }

    /// Creates execution `id` (or finds it: the same message or tick again)
    /// durably, then starts it or queues it.
    async fn create(
        &mut self,
        workflow: &str,
        trigger: &str,
        id: String,
        payload: Value,
    ) -> Result<ExecutionView, WorkflowError> {
        if self.known.contains(&id) {
            return find(&*self.store, &id).await.map(|e| view(&e));
        }
        let definition = self.definition(workflow)?;
        let room = self.has_room(workflow, &definition);
        let execution = StoredExecution {
            id: id.clone(),
            workflow: workflow.to_string(),
            revision: self.revision,
            trigger: trigger.to_string(),
            payload,
            state: if room { "running" } else { "queued" }.to_string(),
            definition: serde_json::to_value(&*definition).unwrap_or(Value::Null),
            created_ms: crate::store::now_ms(),
            finished_ms: None,
            tasks: BTreeMap::new(),
        };
        self.journal
            .submit(vec![Op::Execution(Box::new(execution.clone()))])
            .wait()
            .await?;
        self.known.insert(id);
        let shown = view(&execution);
        if room {
            self.launch(execution);
        } else {
            self.queued
                .entry(workflow.to_string())
                .or_default()
                .push_back(execution);
        }
        self.publish_gauges(workflow);
        Ok(shown)
    }

    fn running_of(&self, workflow: &str) -> usize {
        self.running
            .values()
            .filter(|r| r.workflow == workflow)
            .count()
    }

    fn has_room(&self, workflow: &str, definition: &WorkflowEntry) -> bool {
        !self.paused.contains(workflow)
            && (self.running_of(workflow) as u64) < definition.max_active_executions.max(1)
    }

    fn publish_gauges(&self, workflow: &str) {
        let queued = self.queued.get(workflow).map_or(0, VecDeque::len);
        self.metrics
            .set_active(workflow, self.running_of(workflow), queued);
    }

    /// Starts a driver for `execution` on the definition it was created with.
    fn launch(&mut self, execution: StoredExecution) {
        let id = execution.id.clone();
        let definition: WorkflowEntry = match serde_json::from_value(execution.definition.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(execution = %id, error = %e, "the stored definition of an execution cannot be read; it is left as it is");
                return;
            }
        };
        let definition = Arc::new(definition);
        let mut run = Execution::restore(definition.clone(), recorded_tasks(&execution.tasks));
        let runner = Arc::new(ExecutionRunner {
            workflow: definition,
            broker: self.broker.clone(),
            project: self.project.clone(),
        });
        let (cancel, cancelled) = watch::channel(false);
        let recorder = self.recorder.clone();
        let metrics = self.metrics.clone();
        let workflow = execution.workflow.clone();
        let trigger = Trigger {
            name: execution.trigger,
            payload: execution.payload,
        };
        let driver_id = id.clone();
        let task = self.drivers.spawn(async move {
            let metered = Metered {
                inner: &*recorder,
                metrics: &metrics,
                workflow: &workflow,
                started: Mutex::default(),
            };
            let result = drive(&driver_id, &mut run, &trigger, runner, &metered, cancelled).await;
            if let Ok(state) = result {
                metrics.finished(&workflow, state);
            }
            (driver_id, result)
        });
        self.driver_ids.insert(task.id(), id.clone());
        self.running.insert(
            id,
            Running {
                workflow: execution.workflow,
                cancel,
            },
        );
    }

    /// A driver returned: the execution ended (or its store failed).
    async fn ended(&mut self, id: String, result: Result<ExecutionState, String>) {
        let Some(running) = self.running.remove(&id) else {
            return;
        };
        match result {
            Ok(state) => {
                tracing::debug!(execution = %id, state = ?state, "workflow execution ended");
                let _ = self.handle.ended.send((id.clone(), state));
            }
            Err(e) => {
                tracing::error!(execution = %id, error = %e, "a workflow execution stopped: the store refused a transition; it resumes on the next start")
            }
        }
        if let Some(waiters) = self.cancel_waiters.remove(&id) {
            let shown = find(&*self.store, &id).await.map(|e| view(&e));
            for waiter in waiters {
                let _ = waiter.send(match &shown {
                    Ok(v) => Ok(v.clone()),
                    Err(e) => Err(WorkflowError::BadRequest(e.to_string())),
                });
            }
        }
        self.fill(&running.workflow).await;
    }

    /// Starts queued executions of `workflow` while there is room.
    async fn fill(&mut self, workflow: &str) {
        loop {
            let Some(definition) = self.workflows.get(workflow).cloned() else {
                // A workflow no longer applied still runs what it queued, one at a time.
                if self.running_of(workflow) > 0 || self.paused.contains(workflow) {
                    break;
                }
                if !self.start_next(workflow).await {
                    break;
                }
                continue;
            };
            if !self.has_room(workflow, &definition) || !self.start_next(workflow).await {
                break;
            }
        }
        self.publish_gauges(workflow);
    }

    /// Starts the oldest queued execution of `workflow`; false when none
    /// waits (or the store refused).
    async fn start_next(&mut self, workflow: &str) -> bool {
        let Some(mut execution) = self.queued.get_mut(workflow).and_then(VecDeque::pop_front)
        else {
            return false;
        };
        let write = self
            .journal
            .submit(vec![Op::ExecutionState {
                id: execution.id.clone(),
                state: "running".into(),
                finished_ms: None,
            }])
            .wait()
            .await;
        if let Err(e) = write {
            tracing::error!(execution = %execution.id, error = %e, "a queued execution could not start");
            self.queued
                .entry(workflow.to_string())
                .or_default()
                .push_front(execution);
            return false;
        }
        execution.state = "running".into();
        self.launch(execution);
        true
    }

    async fn cancel(&mut self, id: String, reply: Reply<ExecutionView>) {
        if let Some(running) = self.running.get(&id) {
            let _ = running.cancel.send(true);
            self.cancel_waiters.entry(id).or_default().push(reply);
            return;
        }
        let _ = reply.send(self.cancel_queued(&id).await);
    }

    async fn cancel_queued(&mut self, id: &str) -> Result<ExecutionView, WorkflowError> {
        let stored = find(&*self.store, id).await?;
        let Some(queue) = self.queued.get_mut(&stored.workflow) else {
            return Err(not_now(
                &stored,
                "only a queued or running execution can be cancelled",
            ));
        };
        let Some(at) = queue.iter().position(|e| e.id == id) else {
            return Err(not_now(
                &stored,
                "only a queued or running execution can be cancelled",
            ));
        };
        self.journal
            .submit(vec![Op::ExecutionState {
                id: id.to_string(),
                state: "cancelled".into(),
                finished_ms: Some(crate::store::now_ms()),
            }])
            .wait()
            .await?;
        queue.remove(at);
        self.metrics
            .finished(&stored.workflow, ExecutionState::Cancelled);
        let _ = self
            .handle
            .ended
            .send((id.to_string(), ExecutionState::Cancelled));
        self.publish_gauges(&stored.workflow);
        find(&*self.store, id).await.map(|e| view(&e))
    }

    async fn retry(&mut self, id: &str) -> Result<ExecutionView, WorkflowError> {
        let mut stored = find(&*self.store, id).await?;
        if !matches!(stored.state.as_str(), "failed" | "cancelled") || self.running.contains_key(id)
        {
            return Err(not_now(
                &stored,
                "only a failed or cancelled execution can be retried",
            ));
        }
        let definition: WorkflowEntry =
            serde_json::from_value(stored.definition.clone()).map_err(|e| {
                WorkflowError::BadRequest(format!("its stored definition cannot be read: {e}"))
            })?;
        let room = self.has_room(&stored.workflow, &definition);
        let state = if room { "running" } else { "queued" };
        let mut ops = Vec::new();
        for (name, task) in &mut stored.tasks {
            if task.state == "succeeded" {
                continue;
            }
            *task = StoredTask {
                state: "pending".into(),
                attempts: task.attempts,
                output: None,
                error: None,
                started_ms: None,
                finished_ms: None,
                earlier_attempts: task.attempts,
            };
            ops.push(Op::Task {
                execution: id.to_string(),
                task: name.clone(),
                record: task.clone(),
            });
        }
        ops.push(Op::ExecutionState {
            id: id.to_string(),
            state: state.into(),
            finished_ms: None,
        });
        self.journal.submit(ops).wait().await?;
        stored.state = state.into();
        stored.finished_ms = None;
        let shown = view(&stored);
        let workflow = stored.workflow.clone();
        if room {
            self.launch(stored);
        } else {
            self.queued
                .entry(workflow.clone())
                .or_default()
                .push_back(stored);
        }
        self.publish_gauges(&workflow);
        Ok(shown)
    }

    async fn pause(
        &mut self,
        workflow: &str,
        paused: bool,
    ) -> Result<WorkflowPause, WorkflowError> {
        self.definition(workflow)?;
        self.journal
            .submit(vec![Op::Meta {
                key: format!("{PAUSED}{workflow}"),
                value: paused.then(|| "true".to_string()),
            }])
            .wait()
            .await?;
        if paused {
            self.paused.insert(workflow.to_string());
        } else {
            self.paused.remove(workflow);
            self.fill(workflow).await;
        }
        Ok(WorkflowPause {
            workflow: workflow.to_string(),
            paused,
            queued: self.queued.get(workflow).map_or(0, VecDeque::len),
        })
    }
}

fn not_now(stored: &StoredExecution, hint: &'static str) -> WorkflowError {
    WorkflowError::WrongState {
        id: stored.id.clone(),
        state: stored.state.clone(),
        hint,
    }
}

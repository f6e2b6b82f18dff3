#!/usr/bin/env node
// Submit a task to hivebus and follow its events to the end, from Node.js.
//
// Written from the published contracts only: the JSON Schemas in contracts/schemas/
// (TaskSubmitted, TaskFinished, TaskRejected, and the events printed below) and the
// orchestrator's AsyncAPI document (`hivebus asyncapi orchestrator`). No Python involved.
//
// Events are followed with a JetStream *ordered push consumer* on the EVENTS stream,
// created before the submission is published. It needs only to create consumers on EVENTS
// (and to answer the server's flow control), and it delivers to a subject under the
// connection's inbox prefix, so it works for an identity that may subscribe to nothing but
// its own inboxes (README.md, "Permissions", lists every subject).

import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { connect, PermissionViolationError } from "@nats-io/transport-node";

// Names from the contracts (hivebus.contracts.subjects), written once here.
const SUBMIT_SUBJECT = "hive.tasks.submit";
const TASKS_STREAM = "TASKS";
const EVENTS_STREAM = "EVENTS";
const eventsOf = (taskId) => `hive.events.${taskId}.>`;

// TaskSubmitted.json: `task_id` (and every sub-task id) matches this. The task id also
// becomes a subject token, so it is checked here before anything is sent.
const IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

// The same exit codes as `hivebus submit --wait`, plus one for a wait that ran out.
const EXIT = {
  completed: 0,
  error: 1,
  usage: 2,
  partial: 3,
  failed: 4,
  timeout: 5,
  budget_exceeded: 6,
  cancelled: 7,
  rejected: 8,
  no_end_in_time: 10,
};

const USAGE = `usage: node submit.mjs --goal TEXT (--subtask ROLE[:PROMPT]... | --plan FILE.json)
                        [--task-id ID] [--timeout SECONDS] [--dry-run]

  --goal TEXT             what the task must achieve
  --subtask ROLE[:PROMPT] one sub-task for ROLE (repeatable; they run in parallel);
                          the prompt defaults to the goal; ids are ROLE-1, ROLE-2, ...
  --plan FILE.json        a plan valid against contracts/schemas/Plan.json: {"subtasks": [...]}
  --task-id ID            default: generated; the same id submitted again is the same task
  --timeout SECONDS       how long to wait for the task's end (default 600)
  --dry-run               print the TaskSubmitted message and exit, without connecting

environment: HIVEBUS_NATS_URL (default nats://127.0.0.1:4222), HIVEBUS_NATS_USER,
  HIVEBUS_NATS_PASSWORD, HIVEBUS_NATS_INBOX_PREFIX (default _INBOX_<user>, or _INBOX)`;

class UsageError extends Error {}

/** The command line as options; throws UsageError on anything it cannot use. */
function parseCommandLine(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        goal: { type: "string" },
        subtask: { type: "string", multiple: true, default: [] },
        plan: { type: "string" },
        "task-id": { type: "string" },
        timeout: { type: "string", default: "600" },
        "dry-run": { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
    }));
  } catch (err) {
    throw new UsageError(err.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const timeoutS = Number(values.timeout);
  if (!(timeoutS > 0)) throw new UsageError(`--timeout must be a positive number of seconds`);
  if (!values.goal) throw new UsageError("--goal is required");
  return { ...values, timeoutS };
}

/** Sub-tasks from `--subtask ROLE[:PROMPT]` options (a role name never contains ':'). */
function subtasksFromRoles(specs, goal) {
  const counts = new Map();
  return specs.map((spec) => {
    const colon = spec.indexOf(":");
    const role = colon === -1 ? spec : spec.slice(0, colon);
    const prompt = colon === -1 ? goal : spec.slice(colon + 1);
    const n = (counts.get(role) ?? 0) + 1;
    counts.set(role, n);
    return { id: `${role}-${n}`, role, prompt };
  });
}

/** Sub-tasks read from a JSON file holding a Plan. */
function subtasksFromFile(path) {
  let plan;
  try {
    plan = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new UsageError(`cannot read the plan ${path}: ${err.message}`);
  }
  if (!Array.isArray(plan?.subtasks)) {
    throw new UsageError(`the plan ${path} must be an object with a "subtasks" list`);
  }
  return plan.subtasks;
}

/**
 * A TaskSubmitted message (contracts/schemas/TaskSubmitted.json). The orchestrator checks
 * the plan itself (roles, dependencies, limits) and answers a bad one with a TaskRejected
 * listing every error, so only what this client needs to work is checked here.
 */
function taskSubmitted(options) {
  const taskId = options["task-id"] ?? `t-${randomBytes(6).toString("hex")}`;
  if (!IDENTIFIER.test(taskId)) {
    throw new UsageError(`task id ${JSON.stringify(taskId)} must match ${IDENTIFIER.source}`);
  }
  const subtasks = [
    ...subtasksFromRoles(options.subtask, options.goal),
    ...(options.plan ? subtasksFromFile(options.plan) : []),
  ];
  if (subtasks.length === 0) {
    throw new UsageError("give the plan: at least one --subtask ROLE, or --plan FILE.json");
  }
  return {
    kind: "task_submitted",
    schema_version: 1,
    event_id: randomUUID().replaceAll("-", ""),
    ts: new Date().toISOString(),
    task_id: taskId,
    goal: options.goal,
    plan: { subtasks },
  };
}

/** Connection options from the environment (the same variables the hivebus CLI reads). */
function connectionOptions(env) {
  const user = env.HIVEBUS_NATS_USER || undefined;
  return {
    servers: (env.HIVEBUS_NATS_URL || "nats://127.0.0.1:4222").split(","),
    user,
    pass: env.HIVEBUS_NATS_PASSWORD || undefined,
    // Replies and deliveries come to subjects under this prefix; a deployment lets an
    // identity subscribe only to its own, `_INBOX_<user>.>`.
    inboxPrefix: env.HIVEBUS_NATS_INBOX_PREFIX || (user ? `_INBOX_${user}` : "_INBOX"),
    name: "hivebus-node-client",
  };
}

/** One line for one event, from the fields its schema names. */
function eventLine(kind, e) {
  const sub = e.subtask_id ?? "";
  switch (kind) {
    case "subtask_started":
      return `${sub} started (attempt ${e.attempt}, role ${e.role}, model ${e.model})`;
    case "step": {
      const error = e.error ? ` (error: ${e.error})` : "";
      return `${sub} step ${e.step}: ${e.step_kind} ${e.name}${error}`;
    }
    case "subtask_finished":
      return `${sub} ${e.status}: ${e.reason}`;
    case "plan_ready":
      return `plan ready (generation ${e.generation}, ${e.plan.subtasks.length} sub-tasks)`;
    case "plan_rejected":
      return `plan rejected (attempt ${e.attempt}): ${e.errors.join("; ")}`;
    case "approval_requested":
      return `${sub} awaits approval ${e.approval_id} of ${e.tool} (see hivebus approvals)`;
    case "task_rejected":
      return `rejected: ${e.errors.join("; ")}`;
    case "task_finished": {
      const tokens = e.usage.input_tokens + e.usage.output_tokens;
      return `finished ${e.status}: ${e.reason} (${tokens} tokens)`;
    }
    default:
      return sub ? `${sub} ${kind}` : kind;
  }
}

/** Print the end of the task and return the exit code it means. */
function report(kind, event) {
  if (kind === "task_rejected") {
    console.error(`task ${event.task_id} was rejected:`);
    for (const error of event.errors) console.error(`  - ${error}`);
    return EXIT.rejected;
  }
  console.log(`output: ${JSON.stringify(event.output, null, 2)}`);
  if (event.result_ref) {
    console.log(`(a preview: the whole result is the object ${event.result_ref} in "artifacts")`);
  }
  if (event.status !== "completed") {
    console.error(`task ${event.task_id} ended ${event.status}: ${event.reason}`);
  }
  return EXIT[event.status] ?? EXIT.error;
}

/** Follow the task's events until it finishes, is rejected, or `timeoutS` passes. */
async function follow(messages, taskId, timeoutS) {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    messages.stop();
  }, timeoutS * 1000);
  try {
    for await (const m of messages) {
      const kind = m.subject.slice(m.subject.lastIndexOf(".") + 1);
      const event = m.json();
      console.log(`[${taskId}] ${kind}: ${eventLine(kind, event)}`);
      if (kind === "task_finished" || kind === "task_rejected") return report(kind, event);
    }
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) {
    console.error(
      `task ${taskId} did not end within ${timeoutS} s; it goes on running ` +
        `(follow it again with the same --task-id, or \`hivebus watch ${taskId}\`)`,
    );
    return EXIT.no_end_in_time;
  }
  console.error(`the event stream of task ${taskId} closed before the task ended`);
  return EXIT.error;
}

async function main(argv, env) {
  const options = parseCommandLine(argv);
  const message = taskSubmitted(options);
  if (options["dry-run"]) {
    console.log(JSON.stringify(message, null, 2));
    return EXIT.completed;
  }
  const taskId = message.task_id;
  const connection = connectionOptions(env);
  let nc;
  try {
    nc = await connect(connection);
  } catch (err) {
    throw new Error(`cannot connect to ${connection.servers.join(",")}: ${err.message}`);
  }
  try {
    const js = jetstream(nc);
    // Created first, from the stream's first message: every event of the task is seen,
    // even those of a task submitted before (the same id is the same task).
    const consumer = await js.consumers.getPushConsumer(EVENTS_STREAM, {
      filter_subjects: eventsOf(taskId),
      deliver_policy: DeliverPolicy.All,
    });
    const messages = await consumer.consume();
    const ack = await js.publish(SUBMIT_SUBJECT, JSON.stringify(message), {
      msgID: taskId,
      expect: { streamName: TASKS_STREAM },
    });
    console.log(
      ack.duplicate
        ? `task ${taskId} was submitted before: following it`
        : `submitted task ${taskId} (${TASKS_STREAM} sequence ${ack.seq})`,
    );
    return await follow(messages, taskId, options.timeoutS);
  } finally {
    await nc.close();
  }
}

main(process.argv.slice(2), process.env).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${USAGE}`);
      process.exit(EXIT.usage);
    }
    console.error(`hivebus client: ${err.message}`);
    // A request refused by the server's permissions arrives wrapped in a RequestError.
    const refused = [err, err.cause].some((e) => e instanceof PermissionViolationError);
    if (refused) {
      console.error(
        "the NATS identity lacks a permission: README.md (Permissions) lists what this client " +
          "needs; replies and events arrive under HIVEBUS_NATS_INBOX_PREFIX " +
          "(default _INBOX_<user>)",
      );
    }
    process.exit(EXIT.error);
  },
);

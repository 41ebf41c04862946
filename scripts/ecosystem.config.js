// PM2 process file for a klhill validator host (and, optionally, its public API).
//
//   pm2 start scripts/ecosystem.config.js                 # validator only
//   KLHILL_WITH_API=1 pm2 start scripts/ecosystem.config.js
//   pm2 logs klhill-validator ; pm2 restart klhill-validator ; pm2 save
//
// Configuration comes from the environment (or an env file you `source` before
// starting PM2). Only names, paths and URLs are passed as flags: wallet keys stay
// in the wallet directory (chmod 600) and are never placed on a command line.
//   BT_NETWORK        finney | test | local | ws://...   (default finney)
//   BT_WALLET, BT_WALLET_HOTKEY, BT_WALLET_PATH        which wallet signs weights and pod jobs
//   KLHILL_NETUID     subnet uid
//   KLHILL_PODS       comma-separated pods (python -m validator.pod on the GPU machines), each
//                     URL or URL#POD_HOTKEY: the ss58 the pod runs with (--pod-hotkey); jobs
//                     are then signed for that pod only, so none can be replayed to another
//   KLHILL_DB         state database (default state/validator.db)
//   KLHILL_EXTRA_ARGS extra validator flags, e.g. "--weights-interval 360 --log-format json"
//   KLHILL_API_PORT   API port when KLHILL_WITH_API=1 (default 8080)
//
// What PM2 (7.x) really does with these settings, and why each is set:
// - Restarts: exp_backoff_restart_delay waits 1 s after a crash, then 1.5x longer after each further
//   crash (PM2 caps it at 15 s) and drops back to 1 s once the process has stayed up 30 s. It replaces
//   restart_delay, which PM2 ignores when both are set, so restart_delay is not set.
// - max_restarts counts only "unstable" restarts: exits within min_uptime of the start. With 30 s and
//   1000, a process that keeps dying within 30 s is given up on (status "errored") after ~4 hours of
//   backed-off tries; a process that ran longer is always restarted.
// - stop_exit_codes: exit status 2 means "cannot start" (bad flags, rules or wallet): no restart loop.
// - Stopping: PM2 sends SIGINT (its default; PM2_KILL_SIGNAL in the daemon's environment changes it for
//   every app), then SIGKILL after kill_timeout. The validator treats SIGINT like SIGTERM: it finishes
//   the current step; an open round resumes with the same job on restart.
// - Logs: the validator writes JSON lines to stderr (--log-format json); "time" is not set, because it
//   would prefix every line with a timestamp and break the JSON (each line carries "ts"). PM2 does not
//   rotate logs: install pm2-logrotate (see the README).
const path = require("path");

const root = path.resolve(__dirname, "..");
const env = process.env;
const python = path.join(root, ".venv", "bin", "python");
const db = env.KLHILL_DB || "state/validator.db";
const network = env.BT_NETWORK || "finney";

const common = {
  cwd: root,
  interpreter: "none",
  autorestart: true,
  exp_backoff_restart_delay: 1000,
  min_uptime: 30000,
  max_restarts: 1000,
  stop_exit_codes: [2],
  kill_timeout: 60000,
  merge_logs: true, // one out and one error file per app
};

const apps = [
  {
    ...common,
    name: "klhill-validator",
    script: python,
    args: [
      "-m", "validator", "run",
      "--network", network,
      "--netuid", env.KLHILL_NETUID || "1",
      "--db", db,
      "--log-format", "json",
      ...(env.KLHILL_EXTRA_ARGS ? env.KLHILL_EXTRA_ARGS.split(/\s+/).filter(Boolean) : []),
    ],
    env: {
      PYTHONUNBUFFERED: "1",
      TOKENIZERS_PARALLELISM: "false",
      HF_HUB_DISABLE_TELEMETRY: "1",
      // read by the validator itself; never echoed into argv
      BT_WALLET: env.BT_WALLET || "default",
      BT_WALLET_HOTKEY: env.BT_WALLET_HOTKEY || "default",
      ...(env.BT_WALLET_PATH ? { BT_WALLET_PATH: env.BT_WALLET_PATH } : {}),
      ...(env.KLHILL_PODS ? { KLHILL_PODS: env.KLHILL_PODS } : {}),
      ...(env.HF_TOKEN ? { HF_TOKEN: env.HF_TOKEN } : {}),
    },
  },
];

if (env.KLHILL_WITH_API === "1") {
  apps.push({
    ...common,
    name: "klhill-api",
    script: python,
    args: ["-m", "api", "--db", db, "--network", network, "--netuid", env.KLHILL_NETUID || "1",
           "--host", env.KLHILL_API_HOST || "127.0.0.1", "--port", env.KLHILL_API_PORT || "8080"],
    env: { PYTHONUNBUFFERED: "1" },
    kill_timeout: 10000,
  });
}

module.exports = { apps };

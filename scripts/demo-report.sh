#!/usr/bin/env bash
# Shows the running demo appliance at work: a benign request and attacks sent
# from this machine to the test host (which shares the host network), the
# audit-log entry ModSecurity wrote for the blocked SQL injection, and the
# operator's monitor.
set -euo pipefail
scenario=${1:-default}
instance=${2:-mlwaf-bookworm}
base=${MLWAF_DEMO_URL:-http://127.0.0.1}
hostdir="${MLWAF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlwaf}/hosts/$instance"
[[ -f $hostdir/id_ed25519 ]] || { echo "demo-report: test host $instance is not up (make demo)" >&2; exit 1; }
ssh_to_host() {
  ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -i "$hostdir/id_ed25519" -p "$(cat "$hostdir/port")" root@127.0.0.1 "$@"
}
try() {
  local label=$1; shift
  local code
  code=$(curl -sk -o /dev/null -w '%{http_code}' "$@")
  printf '  %-44s HTTP %s %s\n' "$label" "$code" "$([[ $code == 403 ]] && echo '(blocked by the WAF)')"
}
marker=demo-$(date +%s)
echo
echo "mlwaf demo appliance ($scenario) at $base"
echo
try "benign page        GET /index.php" "$base/index.php"
try "benign login       POST /login.php" --data 'username=alice&password=wonderland' "$base/login.php"
try "SQL injection      POST /login.php" --data-urlencode "username=admin' OR '1'='1' -- " --data 'password=x' "$base/login.php?t=$marker"
try "reflected XSS      GET /search.php" "$base/search.php?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
try "path traversal     GET /index.php" "$base/index.php?file=../../../../etc/passwd"
try "command injection  GET /search.php" "$base/search.php?q=%3Bcat%20%2Fetc%2Fpasswd"
try "command injection CRS misses, ML blocks" "$base/search.php?q=%60id%60&t=$marker-ml"
try "ad request CRS alone refuses, ML clears" "$base/search.php?q=coffee&us_privacy=1---"
try "HTTPS              GET /index.php" "https://127.0.0.1/index.php"
echo
echo "Audit-log entry of the blocked SQL injection (/var/log/apache2/modsec_audit.log):"
ssh_to_host "grep -F \"$marker HTTP/\" /var/log/apache2/modsec_audit.log | tail -n1" |
  python3 -c 'import json,sys,re
for line in sys.stdin:
    e=json.loads(line)
    print("  request:", e["request"]["request_line"])
    print("  status: ", e["response"].get("status"))
    for m in e["audit_data"].get("messages", []):
        rid=re.search(r"\[id \"(\d+)\"\]", m); msg=re.search(r"\[msg \"([^\"]*)\"\]", m)
        print("  rule", rid.group(1) if rid else "?", "-", msg.group(1) if msg else m[:100])'
echo
echo "The ML analyzer's view of the command injection CRS misses (ml_analyzer.log, and its decision in decisions.jsonl):"
# The log line names the request and its unique id; the decision log's entry of that id gives the reasons.
ml_line=$(ssh_to_host "grep -F '$marker-ml' /var/log/apache2/ml_analyzer.log | tail -n1")
echo "  $ml_line"
ml_id=$(cut -d' ' -f3 <<<"$ml_line")
if [[ $ml_id =~ ^[A-Za-z0-9_@-]+$ ]]; then
  ssh_to_host "grep -F '\"id\":\"$ml_id\"' /var/log/mlwaf/decisions.jsonl | tail -n1" |
    python3 -c 'import json,sys
for line in sys.stdin:
    print("  decision:", json.loads(line).get("summary", ""))'
fi
echo
echo "Asking the analyzer about a request that was never sent (ml_waf_analyzer.sh on the host):"
echo "  POST /login.php  username=admin' or 1=1--&password=x"
ssh_to_host "ml_waf_analyzer.sh '/login.php' -X POST -d 'username=admin%27%20or%201%3D1--&password=x' | sed 's/^/  /'"
echo
echo "The operator's live view (waf_monitor.sh --once --window 300 on the host; mlwaf status, analyze_waf_performance.py):"
ssh_to_host "waf_monitor.sh --once --window 300 | sed 's/^/  /'" || true
echo
echo "The attack-simulation page: $base/test.php ; a shell on the host: .venv/bin/molecule login -s $scenario"
echo "Tear it down with: make demo-destroy"

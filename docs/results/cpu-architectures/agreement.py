"""The agreement with its source that a variant's manifest records: `python agreement.py slimbench.json`."""

import json
import sys

check = json.load(open(sys.argv[1]))["agreement_check"]
print(f"{check['agreement']:.3f}" if check.get("checked") else f"not checked: {check.get('reason', '')}")

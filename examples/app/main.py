import json
import subprocess

import tinypkg

print(tinypkg.hello())
print("greeting:", open("/greeting").read().strip())
print("from runFunction:", open("/from-fn").read())
print("jq:", subprocess.run(["jq", "-c", ".a"], input=json.dumps({"a": [1, 2]}), capture_output=True, text=True).stdout.strip())

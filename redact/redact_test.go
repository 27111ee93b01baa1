package redact

import (
	"bytes"
	"strings"
	"testing"
)

type redactCase struct {
	name, in, want string
}

// runCases checks String and Bytes on each case, and that redacting the
// output again changes nothing.
func runCases(t *testing.T, cases []redactCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := String(c.in)
			if got != c.want {
				t.Fatalf("String(%q)\n got  %q\n want %q", c.in, got, c.want)
			}
			if b := Bytes([]byte(c.in)); string(b) != c.want {
				t.Fatalf("Bytes(%q) = %q, want %q", c.in, b, c.want)
			}
			if again := String(got); again != got {
				t.Fatalf("not idempotent: String(%q) = %q", got, again)
			}
		})
	}
}

func TestPrivateKeyBlocks(t *testing.T) {
	const body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
	runCases(t, []redactCase{
		{"rsa", "-----BEGIN RSA PRIVATE KEY-----\n" + body + "-----END RSA PRIVATE KEY-----\n",
			"-----BEGIN RSA PRIVATE KEY-----\n[REDACTED:private-key]\n-----END RSA PRIVATE KEY-----\n"},
		{"pkcs8 with context", "key file:\n-----BEGIN PRIVATE KEY-----\n" + body + "-----END PRIVATE KEY-----\nnext line password ok",
			"key file:\n-----BEGIN PRIVATE KEY-----\n[REDACTED:private-key]\n-----END PRIVATE KEY-----\nnext line password ok"},
		{"openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----",
			"-----BEGIN OPENSSH PRIVATE KEY-----\n[REDACTED:private-key]\n-----END OPENSSH PRIVATE KEY-----"},
		{"ec crlf", "-----BEGIN EC PRIVATE KEY-----\r\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\r\n-----END EC PRIVATE KEY-----\r\n",
			"-----BEGIN EC PRIVATE KEY-----\r\n[REDACTED:private-key]\r\n-----END EC PRIVATE KEY-----\r\n"},
		{"encrypted pkcs8", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----",
			"-----BEGIN ENCRYPTED PRIVATE KEY-----\n[REDACTED:private-key]\n-----END ENCRYPTED PRIVATE KEY-----"},
		{"legacy encrypted headers", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF\n\n" + body + "-----END RSA PRIVATE KEY-----",
			"-----BEGIN RSA PRIVATE KEY-----\n[REDACTED:private-key]\n-----END RSA PRIVATE KEY-----"},
		{"pgp", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF9xyzABCAC\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----",
			"-----BEGIN PGP PRIVATE KEY BLOCK-----\n[REDACTED:private-key]\n-----END PGP PRIVATE KEY BLOCK-----"},
		{"ssh2 format", "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nComment: \"rsa-key\"\nP2/56wAAAi4AAAA3aWYtbW9kbntzaWdu\n---- END SSH2 ENCRYPTED PRIVATE KEY ----",
			"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n[REDACTED:private-key]\n---- END SSH2 ENCRYPTED PRIVATE KEY ----"},
		{"begin without end", "-----BEGIN PRIVATE KEY-----\n" + body + "truncated output",
			"-----BEGIN PRIVATE KEY-----\n[REDACTED:private-key]"},
		{"escaped in json", `{"id":"x","pem":"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHC\n-----END RSA PRIVATE KEY-----\n"}`,
			`{"id":"x","pem":"-----BEGIN RSA PRIVATE KEY-----\n[REDACTED:private-key]\n-----END RSA PRIVATE KEY-----\n"}`},
		{"two blocks", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\nmid\n-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----",
			"-----BEGIN PRIVATE KEY-----\n[REDACTED:private-key]\n-----END PRIVATE KEY-----\nmid\n-----BEGIN PRIVATE KEY-----\n[REDACTED:private-key]\n-----END PRIVATE KEY-----"},
		// Negatives: public material is evidence.
		{"certificate kept", "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----",
			"-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----"},
		{"public key kept", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
			"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"},
		{"dashes in prose", "----- separator -----\n-----BEGIN", "----- separator -----\n-----BEGIN"},
	})
}

func TestAuthorizationAndBearer(t *testing.T) {
	runCases(t, []redactCase{
		{"bearer header", "Authorization: Bearer abc.def.ghi123", "Authorization: Bearer [REDACTED]"},
		{"basic header", "authorization: Basic dXNlcjpwYXNzd29yZA==", "authorization: Basic [REDACTED]"},
		{"proxy header", "Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic [REDACTED]"},
		{"curl -v request", "> GET /api/agent HTTP/1.1\n> Authorization: Bearer nsk_live_abcdef123456\n> Accept: */*",
			"> GET /api/agent HTTP/1.1\n> Authorization: Bearer [REDACTED]\n> Accept: */*"},
		{"token scheme", "Authorization: token ghp_0123456789abcdefghijABCDEFGHIJ012345", "Authorization: token [REDACTED]"},
		{"no scheme", "Authorization: 0123456789abcdef", "Authorization: [REDACTED]"},
		{"digest rest of line", "Authorization: Digest username=\"bob\", response=\"6629fae49393a05397450978507c4ef1\"",
			"Authorization: Digest [REDACTED]"},
		{"header mid-line quoted", "curl -H 'Authorization: Basic dXNlcjpwYXNz' https://example.com",
			"curl -H 'Authorization: Basic [REDACTED]' https://example.com"},
		{"header mid-line unquoted", "curl -H Authorization: Basic dXNlcjpwYXNz https://example.com",
			"curl -H Authorization: Basic [REDACTED] https://example.com"},
		{"json header", `{"headers":{"Authorization":"Bearer eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjEifQ.c2ln"}}`,
			`{"headers":{"Authorization":"Bearer [REDACTED]"}}`},
		{"bearer in log", "sending request with Bearer Zm9vYmFyYmF6cXV4MTIz to api", "sending request with Bearer [REDACTED] to api"},
		{"bearer lower", "bearer 1a2b3c4d5e6f7a8b9c", "bearer [REDACTED]"},
		{"cookie header", "Cookie: session=abc123; theme=dark", "Cookie: [REDACTED]"},
		{"set-cookie header", "< Set-Cookie: pb_auth=eyJ0b2tlbiI6IjEyMyJ9; Path=/; HttpOnly", "< Set-Cookie: [REDACTED]"},
		{"api key header", "X-Api-Key: 9f3b2c1d0e", "X-Api-Key: [REDACTED]"},
		// Negatives.
		{"bearer prose", "Bearer token expired, please log in", "Bearer token expired, please log in"},
		{"www-authenticate", `WWW-Authenticate: Bearer realm="api", error="invalid_token"`, `WWW-Authenticate: Bearer realm="api", error="invalid_token"`},
		{"scheme only", "Authorization: Bearer", "Authorization: Bearer"},
		{"bearers word", "Bearers of bad news", "Bearers of bad news"},
		{"authorization prose", "authorization failed for user bob", "authorization failed for user bob"},
	})
}

func TestSelfNamingTokens(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	runCases(t, []redactCase{
		{"jwt", "token is " + jwt + " ok", "token is [REDACTED:jwt] ok"},
		{"jwt unsigned", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "[REDACTED:jwt]"},
		{"pocketbase jwt", "access=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb2xsZWN0aW9uSWQiOiJwYmNfMzU0OTE3MzM4MyJ9.dBjJxyz",
			"access=[REDACTED:jwt]"},
		{"nannyai static", "NANNYAI token nsk_8f7e6d5c4b3a2910 in use", "NANNYAI token [REDACTED:nannyai-token] in use"},
		{"github classic", "ghp_0123456789abcdefghijABCDEFGHIJ012345", "[REDACTED:github-token]"},
		{"github oauth", "url gho_0123456789abcdefghijABCDEFGHIJ012345.", "url [REDACTED:github-token]."},
		{"github fine-grained", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[REDACTED:github-token]"},
		{"gitlab", "glpat-abcdefghij0123456789", "[REDACTED:gitlab-token]"},
		{"slack", "hook xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "hook [REDACTED:slack-token]"},
		{"google", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "[REDACTED:google-api-key]"},
		{"aws key id", "aws_access_key_id AKIAIOSFODNN7EXAMPLE region", "aws_access_key_id [REDACTED:aws-access-key-id] region"},
		{"aws sts id", "ASIAY34FZKBOKMUTVV7A", "[REDACTED:aws-access-key-id]"},
		{"stripe", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED:stripe-key]"},
		{"openai style", "OPENAI sk-proj-abc123DEF456ghi789JKL0", "OPENAI [REDACTED:api-key]"},
		// Negatives.
		{"akia too short", "AKIA1234", "AKIA1234"},
		{"akia too long", "AKIAIOSFODNN7EXAMPLEX", "AKIAIOSFODNN7EXAMPLEX"},
		{"akia inside word", "XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE"},
		{"ghp short", "ghp_abc", "ghp_abc"},
		{"sk- word", "sk-learn is a library", "sk-learn is a library"},
		{"eyJ alone", "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9"},
		{"nsk placeholder", "static_token must start with nsk_…", "static_token must start with nsk_…"},
	})
}

func TestLabelledValues(t *testing.T) {
	runCases(t, []redactCase{
		{"password=", "password=hunter2 user=bob", "password=[REDACTED] user=bob"},
		{"pgpassword env", "PGPASSWORD=s3cr3t psql -h db", "PGPASSWORD=[REDACTED] psql -h db"},
		{"export quoted", "export MYSQL_ROOT_PASSWORD='a b c'", "export MYSQL_ROOT_PASSWORD='[REDACTED]'"},
		{"double quoted escape", `DB_PASS="x\"y" next=1`, `DB_PASS="[REDACTED]" next=1`},
		{"url query", "GET /cb?code=1&access_token=abc123&state=x", "GET /cb?code=1&access_token=[REDACTED]&state=x"},
		{"logfmt", `level=info msg="login" user=bob api_key=AbC123 attempt=2`, `level=info msg="login" user=bob api_key=[REDACTED] attempt=2`},
		{"ini spaced", "password = correct horse battery staple", "password = [REDACTED]"},
		{"ceph keyring", "[client.admin]\n\tkey = AQBvaBFZAAAAABAAf4hVaxPVhkPEGGsQ5n4yOg==\n\tcaps mon = \"allow *\"",
			"[client.admin]\n\tkey = [REDACTED]\n\tcaps mon = \"allow *\""},
		{"ceph auth get colon", "key: AQBvaBFZAAAAABAAf4hVaxPVhkPEGGsQ5n4yOg==", "key: [REDACTED]"},
		{"yaml", "db:\n  user: app\n  password: hunter2\n  host: db", "db:\n  user: app\n  password: [REDACTED]\n  host: db"},
		{"yaml list", "- client_secret: abcdef", "- client_secret: [REDACTED]"},
		{"yaml quoted", `  api-key: "abc def"`, `  api-key: "[REDACTED]"`},
		{"two word label", "Client Secret: abcdef123", "Client Secret: [REDACTED]"},
		{"json", `{"user":"bob","password":"hunter2","n":1}`, `{"user":"bob","password":"[REDACTED]","n":1}`},
		{"json spaced", `{ "accessToken" : "abc" }`, `{ "accessToken" : "[REDACTED]" }`},
		{"json number", `{"session": "9f8e7d", "pin": 1234, "secret": 42}`, `{"session": "[REDACTED]", "pin": 1234, "secret": [REDACTED]}`},
		{"json escaped", `{"content":"{\"refresh_token\":\"6c4cc1db4825516cb3b36826c283a7a2\"}"}`, `{"content":"{\"refresh_token\":\"[REDACTED]\"}"}`},
		{"python dict", `{'password': 'x1', 'user': 'y'}`, `{'password': '[REDACTED]', 'user': 'y'}`},
		{"refresh token json", `{"access_token":"abc","refresh_token":"6c4cc1db4825516cb3b36826c283a7a2","expires_in":3600}`,
			`{"access_token":"[REDACTED]","refresh_token":"[REDACTED]","expires_in":3600}`},
		{"refresh token kv", "refresh_token=6c4cc1db4825516cb3b36826c283a7a2", "refresh_token=[REDACTED]"},
		{"aws secret labelled", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [REDACTED]"},
		{"aws env", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY=[REDACTED]"},
		{"docker inspect env", `"Env": ["POSTGRES_PASSWORD=s3cret", "PATH=/usr/bin"]`, `"Env": ["POSTGRES_PASSWORD=[REDACTED]", "PATH=/usr/bin"]`},
		{"kubernetes secret", "data:\n  password: cGFzc3dvcmQ=\n  username: YWRtaW4=", "data:\n  password: [REDACTED]\n  username: YWRtaW4="},
		{"java property", "-Djavax.net.ssl.keyStorePassword=changeit", "-Djavax.net.ssl.keyStorePassword=[REDACTED]"},
		{"camel case", "clientSecret=abc", "clientSecret=[REDACTED]"},
		{"dotted", "spring.datasource.password=abc", "spring.datasource.password=[REDACTED]"},
		{"dashed flag inline", "--db-password=abc --port=5432", "--db-password=[REDACTED] --port=5432"},
		{"hash suffix", "password_hash=$2y$10$abcdefghijklmnopqrstuv", "password_hash=[REDACTED]"},
		{"session value", "session_id=Zx81kQ", "session_id=[REDACTED]"},
		{"mount options", "//srv/share /mnt cifs username=bob,password=pa55,uid=0 0 0", "//srv/share /mnt cifs username=bob,password=[REDACTED] 0 0"},
		{"odbc", "Driver={x};Server=db;Uid=sa;Pwd=s3cret;Encrypt=yes", "Driver={x};Server=db;Uid=sa;Pwd=[REDACTED];Encrypt=yes"},
		{"go assign", `	password := "hunter2"`, `	password := "[REDACTED]"`},
		{"wpa psk", `	psk="correcthorse"`, `	psk="[REDACTED]"`},
		{"proxmox cipassword", "cipassword: $5$abc$defghijklmnop", "cipassword: [REDACTED]"},
		{"nannyai static env", "NANNYAI_STATIC_TOKEN=nsk_abcdef012345", "NANNYAI_STATIC_TOKEN=[REDACTED]"},
		{"diff line", "+  password: newvalue", "+  password: [REDACTED]"},
		{"auth", "auth=Zm9vOmJhcg", "auth=[REDACTED]"},
		{"credentials value", "credentials: abc123", "credentials: [REDACTED]"},
		{"cookie kv", "cookie=abcdef", "cookie=[REDACTED]"},
		{"passphrase", "wpa_passphrase=hunter22", "wpa_passphrase=[REDACTED]"},
		// Negatives: the key names something else, or the value is no secret.
		{"token path", "token_path: /var/lib/nannyagent/token.json", "token_path: /var/lib/nannyagent/token.json"},
		{"token type", `{"token_type":"Bearer","expires_in":3600}`, `{"token_type":"Bearer","expires_in":3600}`},
		{"max tokens", `{"max_tokens":100,"prompt_tokens":10}`, `{"max_tokens":100,"prompt_tokens":10}`},
		{"password file", "password_file=/run/secrets/db", "password_file=/run/secrets/db"},
		{"password auth", "PasswordAuthentication no", "PasswordAuthentication no"},
		{"sshd -T", "passwordauthentication yes", "passwordauthentication yes"},
		{"boolean", "password: false", "password: false"},
		{"null json", `{"password":null}`, `{"password":null}`},
		{"empty", "password=", "password="},
		{"empty quoted", `password=""`, `password=""`},
		{"masked", "password=********", "password=********"},
		{"variable", "password=$DB_PASSWORD", "password=$DB_PASSWORD"},
		{"braced variable", "token: ${API_TOKEN}", "token: ${API_TOKEN}"},
		{"template", "password: {{ .Values.password }}", "password: {{ .Values.password }}"},
		{"placeholder", "password=<password>", "password=<password>"},
		{"yaml block", "private_key: |", "private_key: |"},
		{"already redacted", "password=[REDACTED]", "password=[REDACTED]"},
		{"comparison", "if password == expected", "if password == expected"},
		{"not equal", "token != nil", "token != nil"},
		{"session number", "XDG_SESSION_ID=14", "XDG_SESSION_ID=14"},
		{"audit session", "_AUDIT_SESSION=3 _SYSTEMD_SESSION=3", "_AUDIT_SESSION=3 _SYSTEMD_SESSION=3"},
		{"session address", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus"},
		{"auth sock", "SSH_AUTH_SOCK=/tmp/ssh-x/agent.1", "SSH_AUTH_SOCK=/tmp/ssh-x/agent.1"},
		{"pwd env", "PWD=/home/admin OLDPWD=/root", "PWD=/home/admin OLDPWD=/root"},
		{"credentials path", "credentials=/etc/samba/cred", "credentials=/etc/samba/cred"},
		{"credential helper", "credential.helper=store", "credential.helper=store"},
		{"key name", `{"key":"CONFIG_DEBUG_INFO_BTF","value":"y"}`, `{"key":"CONFIG_DEBUG_INFO_BTF","value":"y"}`},
		{"keyctl", "features: keyctl=1,nesting=1", "features: keyctl=1,nesting=1"},
		{"sysctl keys", "kernel.keys.maxkeys = 200", "kernel.keys.maxkeys = 200"},
		{"prose colon", "Failed to refresh token: status 401", "Failed to refresh token: status 401"},
		{"long phrase", "Nov 26 node1 app: could not read token: EOF", "Nov 26 node1 app: could not read token: EOF"},
		{"author", "Author: Jane <jane@example.com>", "Author: Jane <jane@example.com>"},
		{"bypass", "bypass=1", "bypass=1"},
		{"secret name", "secret_name: app-db", "secret_name: app-db"},
		{"timestamps", "10:15:42 12:00", "10:15:42 12:00"},
		{"base64 padding", "data YWJj== more", "data YWJj== more"},
		{"password-less log", "sshd: Failed password for root", "sshd: Failed password for root"},
	})
}

func TestConfigForms(t *testing.T) {
	runCases(t, []redactCase{
		{"xml element", "<user>bob</user><password>hunter2</password>", "<user>bob</user><password>[REDACTED]</password>"},
		{"xml attribute", `<user username="tomcat" password="s3cret" roles="admin"/>`, `<user username="tomcat" password="[REDACTED]" roles="admin"/>`},
		{"maven server", "  <server>\n    <passphrase>abc def</passphrase>\n  </server>", "  <server>\n    <passphrase>[REDACTED]</passphrase>\n  </server>"},
		{"wp-config", "define( 'DB_PASSWORD', 'hunter2' );\ndefine('AUTH_KEY',         'x:8%Ue]a0Jz');\ndefine( 'DB_HOST', 'localhost' );",
			"define( 'DB_PASSWORD', '[REDACTED]' );\ndefine('AUTH_KEY',         '[REDACTED]');\ndefine( 'DB_HOST', 'localhost' );"},
		{"php define salt", `define("NONCE_SALT", "abc'def");`, `define("NONCE_SALT", "[REDACTED]");`},
		{"redis requirepass", "bind 127.0.0.1\nrequirepass foobared\nport 6379", "bind 127.0.0.1\nrequirepass [REDACTED]\nport 6379"},
		{"redis masterauth", "masterauth s3cret", "masterauth [REDACTED]"},
		{"snmp community", "rocommunity s3cretcomm 10.0.0.0/24", "rocommunity [REDACTED] 10.0.0.0/24"},
		{"netrc one line", "machine api.example.com login bob password hunter2", "machine api.example.com login bob password [REDACTED]"},
		{"netrc lines", "machine api.example.com\n  login bob\n  password hunter2\n", "machine api.example.com\n  login bob\n  password [REDACTED]\n"},
		// Negatives.
		{"xml prose", "usage: mysql -p<password> db", "usage: mysql -p<password> db"},
		{"xml other", "<name>web</name>", "<name>web</name>"},
		{"pam", "auth    required    pam_unix.so nullok", "auth    required    pam_unix.so nullok"},
		{"openvpn", "auth SHA256\nauth-user-pass /etc/openvpn/creds", "auth SHA256\nauth-user-pass /etc/openvpn/creds"},
		{"password prose line", "password required for sudo", "password required for sudo"},
		{"redis commented", "# requirepass foobared", "# requirepass [REDACTED]"},
	})
}

func TestURLUserinfo(t *testing.T) {
	runCases(t, []redactCase{
		{"https", "https://bob:pa55@example.com/x", "https://bob:[REDACTED]@example.com/x"},
		{"postgres dsn", "DATABASE_URL=postgres://app:s3cr3t@db:5432/app", "DATABASE_URL=postgres://app:[REDACTED]@db:5432/app"},
		{"dsn in log", "connecting to postgres://app:s3cr3t@db:5432/app failed", "connecting to postgres://app:[REDACTED]@db:5432/app failed"},
		{"redis no user", "redis://:hunter2@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"},
		{"token as password", "git remote https://x-access-token:abc123@github.com/o/r", "git remote https://x-access-token:[REDACTED]@github.com/o/r"},
		{"at in password", "https://bob:p@ss@example.com/", "https://bob:[REDACTED]@example.com/"},
		{"json escaped slashes", `{"url":"https:\/\/bob:pa55@example.com\/x"}`, `{"url":"https:\/\/bob:[REDACTED]@example.com\/x"}`},
		{"two urls", "a https://u:p1@h1/ b https://v:p2@h2/", "a https://u:[REDACTED]@h1/ b https://v:[REDACTED]@h2/"},
		// Negatives.
		{"user only", "ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"},
		{"at in path", "https://example.com/users/@bob:x", "https://example.com/users/@bob:x"},
		{"email", "mail bob@example.com: ok", "mail bob@example.com: ok"},
		{"scp style", "git@github.com:o/r.git", "git@github.com:o/r.git"},
		{"port no user", "http://example.com:8080/@x", "http://example.com:8080/@x"},
	})
}

func TestCryptHashes(t *testing.T) {
	runCases(t, []redactCase{
		{"sha512", "root:$6$Ab12Cd34$VeryLongHashValue0123456789abcdefABCDEF./:19000:0:99999:7:::", "root:$6$[REDACTED]:19000:0:99999:7:::"},
		{"yescrypt", "admin:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7:20000:0:99999:7:::",
			"admin:$y$[REDACTED]:20000:0:99999:7:::"},
		{"locked", "bob:!$6$saltsalt$hashhashhashhash:19000::::::", "bob:!$6$[REDACTED]:19000::::::"},
		{"htpasswd apr1", "alice:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "alice:$apr1$[REDACTED]"},
		{"bcrypt grep output", "/etc/app/users:carol:$2b$12$abcdefghijklmnopqrstuu1234567890ABCDEFGHIJKLMNOPQRSTU", "/etc/app/users:carol:$2b$[REDACTED]"},
		// Negatives.
		{"passwd line", "root:x:0:0:root:/root:/bin/bash", "root:x:0:0:root:/root:/bin/bash"},
		{"no password", "daemon:*:19000:0:99999:7:::", "daemon:*:19000:0:99999:7:::"},
		{"path variable", "PATH=$PATH:$HOME/bin", "PATH=$PATH:$HOME/bin"},
		{"short", "a:$1$ab", "a:$1$ab"},
	})
}

func TestCommandLinesInText(t *testing.T) {
	runCases(t, []redactCase{
		{"sshpass", "root 2311 0.0 sshpass -p hunter2 ssh backup@10.0.0.9", "root 2311 0.0 sshpass -p [REDACTED] ssh backup@10.0.0.9"},
		{"sshpass attached", "/usr/bin/sshpass -phunter2 ssh h", "/usr/bin/sshpass -p[REDACTED] ssh h"},
		{"mysql attached", "mysql -u root -phunter2 appdb", "mysql -u root -p[REDACTED] appdb"},
		{"mysql prompt", "mysql -u root -p appdb", "mysql -u root -p appdb"},
		{"mysqldump password=", "mysqldump --password=hunter2 --all-databases", "mysqldump --password=[REDACTED] --all-databases"},
		{"curl user", "curl -s -u admin:hunter2 https://x/api", "curl -s -u admin:[REDACTED] https://x/api"},
		{"curl user joined", "curl --user=admin:hunter2 https://x/api", "curl --user=admin:[REDACTED] https://x/api"},
		{"curl prompt", "curl -u admin https://x/api", "curl -u admin https://x/api"},
		{"redis-cli", "redis-cli -h cache -a hunter2 ping", "redis-cli -h cache -a [REDACTED] ping"},
		{"ldapsearch", "ldapsearch -x -D cn=admin -w hunter2 -b dc=x", "ldapsearch -x -D cn=admin -w [REDACTED] -b dc=x"},
		{"ipmitool", "ipmitool -I lanplus -H 10.0.0.2 -U admin -P hunter2 power status", "ipmitool -I lanplus -H 10.0.0.2 -U admin -P [REDACTED] power status"},
		{"smbclient", "smbclient //nas/share -U backup%hunter2", "smbclient //nas/share -U backup%[REDACTED]"},
		{"openssl", "openssl pkcs12 -export -passout pass:hunter2 -in a.pem", "openssl pkcs12 -export -passout pass:[REDACTED] -in a.pem"},
		{"openssl file source", "openssl rsa -in k.pem -passin file:/root/pw", "openssl rsa -in k.pem -passin file:/root/pw"},
		{"docker login", "docker login -u bot -p hunter2 registry.example.com", "docker login -u bot -p [REDACTED] registry.example.com"},
		{"long option", "app --token abc123 --verbose", "app --token [REDACTED] --verbose"},
		{"long option password", "wget --http-password hunter2 https://x", "wget --http-password [REDACTED] https://x"},
		{"generic -u", "app -u bob:hunter2", "app -u bob:[REDACTED]"},
		{"after pipe", "ps aux | sshpass -p hunter2 ssh h", "ps aux | sshpass -p [REDACTED] ssh h"},
		// Negatives.
		{"ssh port", "ssh -p 2222 backup@10.0.0.9", "ssh -p 2222 backup@10.0.0.9"},
		{"mkdir", "mkdir -p /var/lib/app", "mkdir -p /var/lib/app"},
		{"docker run", "docker run -p 8080:80 -u 1000:1000 nginx", "docker run -p 8080:80 -u 1000:1000 nginx"},
		{"sudo user", "sudo -u postgres psql -d app", "sudo -u postgres psql -d app"},
		{"switch option", "docker login --password-stdin -u bot", "docker login --password-stdin -u bot"},
		{"no-password", "app --no-password --x", "app --no-password --x"},
		{"option then option", "app --token --verbose", "app --token --verbose"},
		{"agetty", "/sbin/agetty -o -p -- \\u --noclear - linux", "/sbin/agetty -o -p -- \\u --noclear - linux"},
	})
}

func TestArgv(t *testing.T) {
	cases := []struct {
		name      string
		in, want  []string
		unchanged bool
	}{
		{"sshpass", []string{"sshpass", "-p", "hunter2", "ssh", "h"}, []string{"sshpass", "-p", Marker, "ssh", "h"}, false},
		{"sshpass joined", []string{"/usr/bin/sshpass", "-phunter2", "ssh"}, []string{"/usr/bin/sshpass", "-p" + Marker, "ssh"}, false},
		{"mysql joined", []string{"mysql", "-uroot", "-phunter2", "db"}, []string{"mysql", "-uroot", "-p" + Marker, "db"}, false},
		{"mysql prompt", []string{"mysql", "-p", "db"}, nil, true},
		{"mysql long prompt", []string{"mysql", "--password", "db"}, nil, true},
		{"mysql long inline", []string{"mysql", "--password=hunter2", "db"}, []string{"mysql", "--password=" + Marker, "db"}, false},
		{"curl user", []string{"curl", "-u", "bob:pw", "https://x"}, []string{"curl", "-u", "bob:" + Marker, "https://x"}, false},
		{"curl user joined", []string{"curl", "--user=bob:pw", "https://x"}, []string{"curl", "--user=bob:" + Marker, "https://x"}, false},
		{"curl header", []string{"curl", "-H", "Authorization: Bearer abcdefgh12", "https://a:b@h/"},
			[]string{"curl", "-H", "Authorization: Bearer " + Marker, "https://a:" + Marker + "@h/"}, false},
		{"long token", []string{"app", "--token", "abc", "--x"}, []string{"app", "--token", Marker, "--x"}, false},
		{"long password value with dash", []string{"app", "--password", "-x"}, nil, true},
		{"env wrapper", []string{"env", "PGPASSWORD=pw", "psql"}, []string{"env", "PGPASSWORD=" + Marker, "psql"}, false},
		{"timeout wrapper", []string{"timeout", "5", "sshpass", "-p", "pw", "ssh"}, []string{"timeout", "5", "sshpass", "-p", Marker, "ssh"}, false},
		{"htpasswd batch", []string{"htpasswd", "-bc", "/etc/htpasswd", "bob", "pw"}, []string{"htpasswd", "-bc", "/etc/htpasswd", "bob", Marker}, false},
		{"openssl passin", []string{"openssl", "rsa", "-passin", "pass:pw"}, []string{"openssl", "rsa", "-passin", "pass:" + Marker}, false},
		{"openssl kfile", []string{"openssl", "enc", "-kfile", "/root/k"}, nil, true},
		{"docker login", []string{"docker", "login", "-p", "pw", "r"}, []string{"docker", "login", "-p", Marker, "r"}, false},
		{"docker run port", []string{"docker", "run", "-p", "80:80", "nginx"}, nil, true},
		{"ssh port", []string{"ssh", "-p", "22", "h"}, nil, true},
		{"ordinary", []string{"ps", "aux"}, nil, true},
		{"journalctl", []string{"journalctl", "-u", "ssh", "--since", "1 hour ago"}, nil, true},
		{"uid gid", []string{"docker", "run", "-u", "0:0", "x"}, nil, true},
		{"empty", []string{}, nil, true},
		{"empty arg", []string{"sshpass", "", "-p"}, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orig := append([]string(nil), c.in...)
			got := Argv(c.in)
			want := c.want
			if c.unchanged {
				want = c.in
			}
			if strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
				t.Fatalf("Argv(%q) = %q, want %q", c.in, got, want)
			}
			if strings.Join(c.in, "\x00") != strings.Join(orig, "\x00") {
				t.Fatalf("Argv modified its input: %q", c.in)
			}
			if c.unchanged && len(c.in) > 0 && &got[0] != &c.in[0] {
				t.Fatalf("Argv copied an argv that needed no redaction")
			}
			if again := Argv(got); strings.Join(again, "\x00") != strings.Join(got, "\x00") {
				t.Fatalf("Argv not idempotent: %q → %q", got, again)
			}
		})
	}
}

func TestNoSecretReturnsInput(t *testing.T) {
	in := []byte("Nov 26 10:14:02 node1 sshd[2201]: Accepted publickey for admin from 10.0.0.5 port 51822\n")
	if out := Bytes(in); &out[0] != &in[0] {
		t.Fatal("Bytes copied input that held no secret")
	}
	if got := String(""); got != "" {
		t.Fatalf("String(\"\") = %q", got)
	}
	if got := Bytes(nil); got != nil {
		t.Fatalf("Bytes(nil) = %q", got)
	}
}

func TestBytesDoesNotModifyInput(t *testing.T) {
	in := []byte("password=hunter2\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	orig := bytes.Clone(in)
	out := Bytes(in)
	if !bytes.Equal(in, orig) {
		t.Fatalf("Bytes modified its input: %q", in)
	}
	if bytes.Contains(out, []byte("hunter2")) || bytes.Contains(out, []byte("AAAA")) {
		t.Fatalf("secrets left in %q", out)
	}
}

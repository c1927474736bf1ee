// Flat config shared by every package: the recommended rules of ESLint and
// typescript-eslint, plus the few that protect the hot paths.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "docs/api/**", "**/.cache/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Plain Node scripts (benchmarks, repository scripts).
    files: ["**/*.mjs"],
    languageOptions: {
      globals: {
        console: "readonly", process: "readonly", performance: "readonly", Buffer: "readonly", URL: "readonly",
        setTimeout: "readonly", clearTimeout: "readonly", setImmediate: "readonly", setInterval: "readonly", clearInterval: "readonly",
      },
    },
  },
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-constant-condition": ["error", { checkLoops: false }],
      "prefer-const": "error",
      "no-var": "error",
    },
  },
);

// Test configuration shared by every package.
// - Workspace packages resolve to their TypeScript sources (the
//   "@typevisor/source" export condition), so tests never run stale builds.
// - Files named *.slow.test.ts run only with TYPEVISOR_SLOW=1 (CI sets it).
// - Every run writes test-results.json, which scripts/test.mjs totals.
import { defaultClientConditions, defaultServerConditions } from "vite";
import { defineConfig, type ViteUserConfig } from "vitest/config";

export function packageTestConfig(overrides: ViteUserConfig["test"] = {}): ViteUserConfig {
  const slow = process.env.TYPEVISOR_SLOW === "1";
  return defineConfig({
    resolve: { conditions: ["@typevisor/source", ...defaultClientConditions] },
    ssr: { resolve: { conditions: ["@typevisor/source", ...defaultServerConditions] } },
    test: {
      include: ["src/**/*.test.ts", "test/**/*.test.ts"],
      exclude: ["**/node_modules/**", "**/dist/**", ...(slow ? [] : ["**/*.slow.test.ts"])],
      reporters: process.env.CI ? ["dot", ["json", { outputFile: "test-results.json" }]] : ["default", ["json", { outputFile: "test-results.json" }]],
      testTimeout: 60_000,
      hookTimeout: 120_000,
      ...overrides,
    },
  });
}
